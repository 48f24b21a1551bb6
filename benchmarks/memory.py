"""Peak memory of training on this machine, one subprocess per case.

Cases:
1. `econvlstm_ram` at its `paper` size, batch 8 clips of 8 frames at 64 px grey: a few
   training steps (`train_on_batch`, graph mode, Adam, both losses).
2. `vae_swap` at 128 px (its `paper` size): a few steps of stage 1 (identity) and stage 2
   (expression, with L_gan and L_switch) through the real trainer (`run_stage`).
3. The tf.data training pipeline (`data.pipeline.still_dataset`, shuffle + decode + augment +
   batch) read to its end over a prepared SynthFER still set of N images and of 4N images: the
   peak should stay flat, since records stream from the TFRecord shards.
4. For contrast, vae_swap's loader (`training.vae_swap.load_stills`), which holds a training
   split's stills in memory by design (stage 1 pairs images of a subject at random): it grows.

Peak RSS is `resource.getrusage(RUSAGE_SELF).ru_maxrss` of the case's own process, so it
includes the TensorFlow runtime; "baseline" is the RSS after importing TensorFlow and Keras,
before the case's work. Writes benchmarks/results/memory.json and the "memory" section of
docs/benchmarks.md.

Usage: python benchmarks/memory.py [--steps 3] [--subjects 10]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MB = 1024 * 1024


def _rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ------------------------------------------------------------------------------------ cases (child side)


def case_ram(steps):
    import keras
    import numpy as np

    from fer_keras.models.registry import get_model

    baseline = _rss_now()
    keras.utils.set_random_seed(0)
    model = get_model("econvlstm_ram", (8, 64, 64, 1), 7, size="paper")
    model.compile(keras.optimizers.Adam(1e-4), keras.losses.SparseCategoricalCrossentropy())
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 8, 64, 64, 1)).astype("float32")
    y = rng.integers(0, 7, 8).astype("int32")
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return {"baseline_mb": baseline, "params": int(model.count_params()), "batch": 8, "input": "8 x 64 x 64 x 1 clips",
            "steps": steps, "first_step_s": times[0], "last_step_s": times[-1]}


def case_vae(steps):
    import numpy as np

    from fer_keras.models.registry import get_model
    from fer_keras.training import vae_swap as T

    baseline = _rss_now()
    batch = 32
    vae = get_model("vae_swap", (128, 128, 1), 7, size="paper")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch * steps, 128, 128, 1)).astype("float32")
    subjects = np.repeat(np.arange(4), batch * steps // 4).astype("int32")
    optimizers = T.make_optimizers(vae)
    counts = {n: 0 for n in optimizers}
    rows, stages = [], {}
    for stage in ("identity", "expression"):
        T.run_stage(vae, stage, (images, subjects), epochs=1, optimizers=optimizers, counts=counts, rows=rows,
                    batch_size=batch, stages=stages)
    return {"baseline_mb": baseline, "params": int(vae.count_params()), "batch": batch, "input": "128 x 128 x 1 stills",
            "steps": steps, "stage_seconds": {r["stage"]: r["seconds"] for r in rows}}


def case_pipeline(data):
    import tensorflow as tf

    from fer_keras.data import pipeline, records

    manifest = records.read_manifest(data)
    baseline = _rss_now()
    ds = pipeline.still_dataset(manifest, image_size=128, channels=1, batch_size=32, training=True, epochs=1)
    images = 0
    for x, _ in ds:
        images += int(tf.shape(x)[0])
    return {"baseline_mb": baseline, "images": images, "dataset_mb_decoded": images * 128 * 128 * 4 / MB}


def case_load_stills(data):
    from fer_keras.data import pipeline, records
    from fer_keras.training.vae_swap import load_stills

    manifest = records.read_manifest(data)
    baseline = _rss_now()
    stills = load_stills(manifest, pipeline.subjects_of(manifest), 128, 1)
    n = len(stills["images"])
    return {"baseline_mb": baseline, "images": n, "dataset_mb_decoded": n * 128 * 128 * 4 / MB}


def child(args):
    import keras  # noqa: F401  (imported before the baseline is taken)
    import tensorflow  # noqa: F401

    cases = {"ram": lambda: case_ram(args.steps), "vae_swap": lambda: case_vae(args.steps),
             "pipeline": lambda: case_pipeline(args.data), "load_stills": lambda: case_load_stills(args.data)}
    result = cases[args.case]()
    result["peak_rss_mb"] = _peak()
    print("RESULT " + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------ parent


def _run_case(case, **options):
    command = [sys.executable, os.path.abspath(__file__), "--case", case]
    for k, v in options.items():
        command += [f"--{k}", str(v)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["wall_s"] = time.perf_counter() - start
    print(case, options, json.dumps(result), flush=True)
    return result


def _prepare(out, subjects):
    command = [sys.executable, "-m", "fer_keras.cli", "-q", "prepare", "synth", "--out", out, "--kind", "still",
               "--subjects", str(subjects), "--samples-per-emotion", "4", "--size", "128", "--grey"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--case")
    parser.add_argument("--data")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--subjects", type=int, default=10, help="subjects of the small SynthFER set (the large has 4x)")
    args = parser.parse_args()
    if args.case:
        return child(args)

    from benchmarks._report import machine, write_json, write_section

    results = {"steps": args.steps}
    results["econvlstm_ram_paper_b8"] = _run_case("ram", steps=args.steps)
    results["vae_swap_128px"] = _run_case("vae_swap", steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"small": args.subjects, "large": 4 * args.subjects}
        for label, subjects in sets.items():
            _prepare(os.path.join(tmp, label), subjects)
        for label in sets:
            results[f"pipeline_{label}"] = _run_case("pipeline", data=os.path.join(tmp, label))
        for label in sets:
            results[f"load_stills_{label}"] = _run_case("load_stills", data=os.path.join(tmp, label))
    write_json("memory", results)

    def row(name, r, what):
        return f"| {name} | {what} | {r['baseline_mb']:.0f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['baseline_mb']:.0f} |"

    ram, vae = results["econvlstm_ram_paper_b8"], results["vae_swap_128px"]
    ps, pl = results["pipeline_small"], results["pipeline_large"]
    ls, ll = results["load_stills_small"], results["load_stills_large"]
    lines = [
        "## Memory of training",
        "",
        f"`benchmarks/memory.py --steps {args.steps} --subjects {args.subjects}`, one process per row, {machine()}. "
        "Peak RSS (`ru_maxrss`) of that process, TensorFlow runtime included; baseline: RSS after importing "
        "TensorFlow and Keras.",
        "",
        "| case | what | baseline MB | peak RSS MB | peak - baseline MB |",
        "|---|---|---:|---:|---:|",
        row("econvlstm_ram, paper size", ram, f"train_on_batch, batch 8 clips (8 x 64 x 64 x 1), {ram['params']:,} params, {ram['steps']} steps"),
        row("vae_swap, paper size, 128 px", vae, f"stage 1 + stage 2 (L_gan, L_switch), batch {vae['batch']}, {vae['params']:,} params, {vae['steps']} steps each"),
        row("training pipeline, N images", ps, f"still_dataset (128 px, shuffle, augment, batch 32) read to the end: {ps['images']} images ({ps['dataset_mb_decoded']:.0f} MB decoded)"),
        row("training pipeline, 4N images", pl, f"the same over {pl['images']} images ({pl['dataset_mb_decoded']:.0f} MB decoded)"),
        row("vae_swap loader, N images", ls, f"load_stills: {ls['images']} images held in memory ({ls['dataset_mb_decoded']:.0f} MB)"),
        row("vae_swap loader, 4N images", ll, f"load_stills: {ll['images']} images ({ll['dataset_mb_decoded']:.0f} MB)"),
        "",
        f"The tf.data pipeline streams records from the TFRecord shards: its peak grows by "
        f"{pl['peak_rss_mb'] - ps['peak_rss_mb']:.0f} MB for 4x the images ({pl['dataset_mb_decoded'] - ps['dataset_mb_decoded']:.0f} MB "
        "more decoded pixels); what it holds is bounded by its shuffle buffer (2048 encoded records) and prefetch, "
        "not by the dataset. vae_swap's trainer is the exception: it loads its training split into memory "
        "(stage 1 draws a random other image of each subject every epoch), so its memory grows with the split, "
        "as the last two rows show.",
    ]
    write_section("memory", "\n".join(lines))


if __name__ == "__main__":
    main()
