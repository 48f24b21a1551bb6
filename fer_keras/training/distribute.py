"""`fer-keras train --strategy default|mirrored|multiworker`: tf.distribute for the fit loops.

- ``default``: no distribution (one device).
- ``mirrored``: `tf.distribute.MirroredStrategy` over this machine's GPUs (or its CPU).
- ``multiworker``: `tf.distribute.MultiWorkerMirroredStrategy` over the machines named in
  ``TF_CONFIG``; every worker runs the same command.

What holds under every strategy (docs/scaling.md says more):

- ``--batch-size`` is the *global* batch: each of R replicas gets batch / R examples of it, and
  one step makes one update from the whole batch, so a run's maths does not depend on R.
- Data: every worker builds the same tf.data stream (same seed, same shuffles) and keeps its
  part of each global batch (`AutoShardPolicy.DATA`). FILE sharding over the TFRecord shards is
  not used: the pipeline filters records by subject *after* reading them, so workers given
  different files would hold different numbers of examples and run different numbers of steps,
  which hangs the collective all-reduce; and it would change which examples meet in a batch.
  The price is that each worker reads and decodes every record (cheap for FER-sized data).
- BatchNormalization layers use each replica's own share of the batch for their statistics
  (tf.distribute's default). Synchronized (global-batch) statistics are opt-in with
  ``FER_KERAS_SYNC_BN=1``: they work for `frame_cnn` (the distributed tests use them to get the
  one-device run exactly) but failed in the RAM models on TF 2.21 with "Shape mismatch in the
  collective instance" (the BN all-reduces of the forward and backward passes and the gradient
  all-reduce are not ordered alike on every replica), so they are not the default.
- Losses: Keras's compiled losses (and any `keras.losses.Loss` reduced over the batch) divide
  by `num_replicas_in_sync` themselves; custom train steps that reduce with `ops.mean` divide
  themselves (`fer_keras.training.vae_swap`). The optimizer all-reduces gradients with SUM.
- Only the chief (worker 0, or the task of type "chief") writes the run folder; the other
  workers write the same files into a throw-away folder (`worker_run_dir`), the Keras
  multi-worker pattern, because saving reads distributed variables on every worker.

Keras 3.15's TensorFlow trainer fails under `MultiWorkerMirroredStrategy`
(keras-team/keras#20585; tensorflow/tensorflow#72388) in two places, which
`_patch_keras_for_multi_worker` works around in the worker process:

1. `fit` reduces the first input batch across workers with `strategy.reduce("MEAN", batch)`
   only to learn its shapes; the collective reduce of a nested PerReplica fails
   ("Attempt to convert a value (PerReplica ...)"). The patch takes the local replica's batch.
2. Each step reduces its logs with `strategy.reduce("MEAN", v, axis=0)`, which fails on the
   scalar logs ("Invalid reduction dimension 0 for input with 0 dimensions"). The patch
   reduces with ``axis=None`` (the mean over replicas, what a single worker reports).
"""

import json
import os
import pathlib
import shutil
import tempfile

import tensorflow as tf

from fer_keras.errors import UserError

STRATEGIES = ("default", "mirrored", "multiworker")
WORKER_DIR_ENV = "FER_KERAS_WORKER_DIR"
SYNC_BN_ENV = "FER_KERAS_SYNC_BN"


def sync_batch_norm_requested():
    return os.environ.get(SYNC_BN_ENV, "0") == "1"


_MADE = {}


def make_strategy(name):
    """The `tf.distribute.Strategy` named `name` (one of `STRATEGIES`), made once per process.

    Two MirroredStrategy objects over the same devices in one process draw colliding collective
    keys ("Shape mismatch in the collective instance ..."), so a second call returns the first.
    """
    if name not in _MADE:
        _MADE[name] = _make_strategy(name)
    return _MADE[name]


def _make_strategy(name):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        # Every GPU; without GPUs every logical CPU (one, unless split with
        # tf.config.set_logical_device_configuration, as the tests do).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        read_tf_config()
        _patch_keras_for_multi_worker()
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"strategy must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}")


def read_tf_config():
    """Parses and checks ``TF_CONFIG``; returns (cluster, task type, task index)."""
    raw = os.environ.get("TF_CONFIG")
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    if not raw:
        raise UserError(f"--strategy multiworker needs TF_CONFIG set on every worker, e.g. TF_CONFIG='{example}'")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e}). Example: {example}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not isinstance(config.get("task"), dict):
        raise UserError(f"TF_CONFIG must hold a 'cluster' object and a 'task' object. Received: {raw[:200]}")
    cluster, task = config["cluster"], config["task"]
    workers = cluster.get("worker", []) + cluster.get("chief", [])
    if not workers or not all(isinstance(a, str) and ":" in a for a in workers):
        raise UserError(f"TF_CONFIG cluster must list 'worker' (and optionally one 'chief') as host:port strings. Received: {cluster}")
    if len(cluster.get("chief", [])) > 1:
        raise UserError(f"TF_CONFIG may name at most one chief. Received: {cluster['chief']}")
    unknown = sorted(set(cluster) - {"worker", "chief"})
    if unknown:
        raise UserError(f"TF_CONFIG cluster jobs must be 'worker' or 'chief' for multiworker training. Received: {unknown}")
    kind, index = task.get("type"), task.get("index")
    if kind not in ("worker", "chief") or not isinstance(index, int) or isinstance(index, bool):
        raise UserError(f"TF_CONFIG task must be {{'type': 'worker' or 'chief', 'index': int}}. Received: {task}")
    if not 0 <= index < len(cluster.get(kind, [])):
        raise UserError(f"TF_CONFIG task index {index} is outside the cluster's {len(cluster.get(kind, []))} {kind} address(es).")
    return cluster, kind, index


def is_chief(strategy=None):
    """True on the worker that writes the run folder (always true without multiworker)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_run_dir(run_dir, strategy):
    """Where this worker writes: `run_dir` on the chief, else ``$FER_KERAS_WORKER_DIR`` or a fresh temp folder.

    Returns (folder, throw_away): the caller removes a throw-away folder when training ends.
    """
    if is_chief(strategy):
        return pathlib.Path(run_dir), False
    resolver = strategy.cluster_resolver
    chosen = os.environ.get(WORKER_DIR_ENV)
    if chosen:
        path = pathlib.Path(chosen)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"{WORKER_DIR_ENV}={chosen!r} already exists and is not empty.")
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return pathlib.Path(tempfile.mkdtemp(prefix=f"fer-keras-{resolver.task_type}{resolver.task_id}-")), True


def remove_worker_dir(path):
    shutil.rmtree(path, ignore_errors=True)


def distribute_dataset(dataset, strategy=None):
    """Sets the DATA auto-shard policy (see the module docstring) on a tf.data pipeline."""
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def synchronize_batch_norm(model):
    """Makes every BatchNormalization layer of `model` use global-batch statistics under a strategy.

    Without a strategy (or with one replica) synchronized statistics are the local ones, so the
    flag changes nothing there; it is saved in the layer config and harmless on load.
    """
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
    return model


_PATCHED = False


def _patch_keras_for_multi_worker():
    """Works around keras-team/keras#20585 in this process (see the module docstring)."""
    global _PATCHED
    if _PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            # Logs are scalars: reduce over replicas (axis=None), not over a batch axis.
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                # Only the shapes are used: the local replica's batch, not a cross-worker mean.
                data_batch = tree.map_structure(
                    lambda v: self.distribute_strategy.experimental_local_results(v)[0]
                    if isinstance(v, tf.distribute.DistributedValues) else v,
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    _PATCHED = True
