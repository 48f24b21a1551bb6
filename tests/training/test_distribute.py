"""`fer-keras train --strategy`: two workers on 127.0.0.1 agree, mirrored equals default, custom steps scale.

Every distributed case runs in subprocesses: a MultiWorkerMirroredStrategy and the logical CPU
devices a MirroredStrategy needs on a CPU machine must both exist before TensorFlow starts.
Compared runs use `frame_cnn` without dropout (model_args dropout=0): replicas draw dropout
masks from one seed state, so with dropout a distributed run is a valid run but not the same
run as on one device.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from fer_keras.errors import UserError
from fer_keras.training import config as config_lib
from fer_keras.training import distribute
from tests.conftest import expect_user_error, invoke

CLI = [sys.executable, "-m", "fer_keras.cli", "-q"]
# 3 folds of the 6-subject still set: 2 subjects (70 images) train, so batch 14 splits evenly
# over 2 replicas (7 each) and every epoch has 5 full batches.
TRAIN = ["train", "--model", "frame_cnn", "--epochs", "2", "--batch-size", "14", "--image-size", "32",
         "--folds", "3", "--fold", "0", "--seed", "5"]
NO_DROPOUT = {"model_args": {"dropout": 0.0}}


def _env(**extra):
    # Synchronized BatchNorm (opt-in) makes a distributed frame_cnn step the one-device step.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.getcwd(), FER_KERAS_SYNC_BN="1")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _weights(path):
    return keras.saving.load_model(path, compile=False).get_weights()


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


# ------------------------------------------------------------------------------- configuration


def test_strategy_is_a_validated_config_key():
    assert config_lib.resolve()["strategy"] == "default"
    assert config_lib.resolve(strategy="mirrored")["strategy"] == "mirrored"
    with pytest.raises(UserError, match="strategy must be"):
        config_lib.resolve({"strategy": "tpu"})


@pytest.mark.parametrize("value, match", [
    (None, "needs TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "'task' object"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}', "outside the cluster"),
    ('{"cluster": {"ps": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}', "'worker' or 'chief'"),
    ('{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
])
def test_tf_config_errors(monkeypatch, value, match):
    if value is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(UserError, match=match):
        distribute.read_tf_config()


def test_cli_multiworker_without_tf_config_is_one_line_and_writes_nothing(still_data, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    line = expect_user_error(invoke("train", "--strategy", "multiworker", "--data", still_data, "--out", tmp_path, "--name", "x"))
    assert "TF_CONFIG" in line
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------- default vs mirrored, custom steps

REPLICA_SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras import ops
    from fer_keras.training import distribute, fit
    from fer_keras.training import vae_swap as T
    from fer_keras.training.config import resolve
    from fer_keras.models.registry import get_model

    out, data = sys.argv[1], sys.argv[2]
    mirrored = distribute.make_strategy("mirrored")
    results = {"replicas": mirrored.num_replicas_in_sync}

    # 1. The real trainer: default and mirrored runs of the same configuration.
    for strategy in ("default", "mirrored"):
        config = resolve({"model_args": {"dropout": 0.0}}, model="frame_cnn", data=data, epochs=2, batch_size=14,
                         image_size=32, folds=3, fold=0, seed=5, strategy=strategy)
        fit.train(config, out=out, name=strategy, quiet=True)

    def run_steps(build, strategy, data, compile_args=None):
        """Weights before/after one fit over `data` and its logs, the model built under `strategy`."""
        with strategy.scope():
            model, fit_model = build()
            if compile_args is not None:
                model.compile(**compile_args())
        before = [ops.convert_to_numpy(v) for v in model.variables]
        logs = fit_model.fit(data, epochs=1, verbose=0).history
        after = [ops.convert_to_numpy(v) for v in model.variables]
        return before, after, {k: float(v[-1]) for k, v in logs.items()}

    def compare(name, build, data, compile_args=None):
        bd, ad, ld = run_steps(build, tf.distribute.get_strategy(), data, compile_args)
        bm, am, lm = run_steps(build, mirrored, data, compile_args)
        assert all(np.array_equal(a, b) for a, b in zip(bd, bm, strict=True)), "different initial weights"
        ud = [a - b for a, b in zip(ad, bd)]
        um = [a - b for a, b in zip(am, bm)]
        scale = max(float(np.abs(u).max()) for u in ud)
        err = max(float(np.abs(a - b).max()) for a, b in zip(ud, um))
        results[name] = {"update_max": scale, "update_err": err / scale, "logs_default": ld, "logs_mirrored": lm}

    # 2. RAMClassifier: compiled CE + its own attention CE (compute_loss). Its stem's BatchNorm
    # uses per-replica statistics (synchronized BN fails in these models, see distribute.py), so
    # each batch is [h h]: each replica's half has the whole batch's statistics.
    rng = np.random.default_rng(0)
    halves = [rng.uniform(0, 255, (4, 4, 16, 16, 1)).astype("float32") for _ in range(2)]
    half_labels = [rng.integers(0, 3, 4).astype("int32") for _ in range(2)]
    clips = np.concatenate([halves[0], halves[0], halves[1], halves[1]])
    labels = np.concatenate([half_labels[0], half_labels[0], half_labels[1], half_labels[1]])
    ram_data = tf.data.Dataset.from_tensor_slices((clips, labels)).batch(8)

    def build_ram():
        keras.utils.set_random_seed(1)
        model = get_model("econvlstm_ram", (4, 16, 16, 1), 3, conv_filters=4, rnn_filters=(4, 4, 4, 4),
                          attention_filters=4, groups=2, dense_units=(8,), dropout=0.0)
        return model, model

    # SGD: Adam's first steps hardly see a gradient's scale, so they would hide a missing 1/R.
    compare("ram", build_ram, ram_data, lambda: dict(optimizer=keras.optimizers.SGD(0.05),
                                                     loss=keras.losses.SparseCategoricalCrossentropy()))

    # 3. vae_swap's stages: custom train steps, one optimizer per network. Noise off (it is
    # drawn per replica), so the two runs see the same latents.
    T._normal = lambda shape, seed=None: ops.zeros(shape)
    tiny = dict(encoder_filters=(4, 4, 8, 8), decoder_filters=(8, 4, 4, 4), latent_dim=4)
    faces = rng.uniform(0, 255, (16, 32, 32, 1)).astype("float32")

    def build_stage(stage):
        def build():
            keras.utils.set_random_seed(2)
            vae = get_model("vae_swap", (32, 32, 1), 7, **tiny)
            optimizers = {n: keras.optimizers.SGD(1e-7) for n in ("identity_encoder", "expression_encoder", "decoder", "discriminator")}
            for n, net in (("identity_encoder", vae.identity_encoder), ("expression_encoder", vae.expression_encoder),
                           ("decoder", vae.decoder), ("discriminator", vae.discriminator)):
                optimizers[n].build(net.trainable_variables)
            model = T.stage_model(vae, stage, optimizers, {})
            return vae, model
        return build

    identity_data = tf.data.Dataset.from_tensor_slices((faces, faces[::-1].copy())).batch(8)
    compare("vae_identity_stage", build_stage("identity"), identity_data)
    # The switch loss picks each image's donor within its replica's share of the batch: with the
    # batch [a b c d a b c d] (subjects 0 0 1 1 0 0 1 1) every donor is the same image either way.
    half = faces[:4]
    batch = np.concatenate([half, half, faces[4:8], faces[4:8]])
    subjects = np.array([0, 0, 1, 1] * 4, "int32")
    expression_data = tf.data.Dataset.from_tensor_slices((batch, subjects)).batch(8)
    compare("vae_expression_stage", build_stage("expression"), expression_data)
    print("RESULT " + json.dumps(results))
''')


@pytest.fixture(scope="module")
def replica_results(still_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    script = root / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(root / "runs"), str(still_data)], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), root / "runs"


@pytest.mark.slow
def test_mirrored_run_matches_default_run(replica_results):
    results, runs = replica_results
    assert results["replicas"] == 2
    last = "checkpoints/epoch-0002/model.keras"
    for a, b in zip(_weights(runs / "default" / last), _weights(runs / "mirrored" / last), strict=True):
        _close(a, b)
    config = json.loads((runs / "mirrored" / "config.json").read_text())
    assert config["strategy"] == "mirrored"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["ram", "vae_identity_stage", "vae_expression_stage"])
def test_custom_train_steps_scale_their_losses(replica_results, case):
    result = replica_results[0][case]
    assert result["update_max"] > 0
    # A loss summed over replicas instead of averaged would make this error 1.0 (a 2x update).
    assert result["update_err"] < 1e-3, result
    for key, value in result["logs_default"].items():
        # Reported losses are per-example means of the global batch under both (RAM's
        # attention_loss multiplied back by the replica count).
        assert value == pytest.approx(result["logs_mirrored"][key], rel=1e-3, abs=1e-5), (key, result)


# ------------------------------------------------------------------------------- two workers


def _close(a, b):
    """Same global batches, different float summation order (all-reduce, synchronized BN): Adam
    divides by sqrt(v), so a gradient element near 0 whose last bits differ can move its weight
    by up to lr (1e-3) a step. Measured here: max 2e-4, mean 2.5e-5 after 10 Adam steps."""
    diff = np.abs(a - b)
    assert diff.max() < 2e-3 and diff.mean() < 1e-4, (diff.max(), diff.mean())


@pytest.fixture(scope="module")
def two_worker_run(still_data, tmp_path_factory):
    """`fer-keras train --strategy multiworker` as two processes on 127.0.0.1: (chief run folder, worker 1's folder, tmp)."""
    tmp_path = tmp_path_factory.mktemp("two_workers")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(NO_DROPOUT))
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        env = _env(TF_CONFIG=tf_config, FER_KERAS_WORKER_DIR=str(tmp_path / f"worker{index}"))
        command = CLI + TRAIN + ["--strategy", "multiworker", "--data", str(still_data), "--config", str(config),
                                 "--out", str(tmp_path / "runs"), "--name", "mw"]
        workers.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [w.communicate(timeout=300) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-4000:]
    return tmp_path / "runs" / "mw", tmp_path / "worker1", tmp_path


def test_two_workers_on_localhost_end_with_identical_weights(two_worker_run):
    chief, other, tmp_path = two_worker_run
    assert not (tmp_path / "worker0").exists(), "the chief writes the run folder, not a worker folder"
    assert json.loads((chief / "config.json").read_text())["strategy"] == "multiworker"
    chief_weights = _weights(chief / "model.keras")
    for a, b in zip(chief_weights, _weights(other / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (chief / "history.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.slow
def test_multiworker_run_matches_default_run(two_worker_run, replica_results):
    """The same configuration on one device (made by the replica fixture): the same global batches."""
    chief = two_worker_run[0]
    last = "checkpoints/epoch-0002/model.keras"
    for a, b in zip(_weights(chief / last), _weights(replica_results[1] / "default" / last), strict=True):
        _close(a, b)
