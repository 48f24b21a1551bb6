"""Dataset preparation throughput: dlib detection + 68 landmarks + alignment, with and without
optical flow, with 1 and 2 worker processes.

Run as ``python benchmarks/prepare_benchmark.py [--sequences 8 --frames 12 --stills 24]``.
Writes benchmarks/results/prepare.json and the "prepare" section of docs/benchmarks.md.

Inputs are built in a temporary folder in the real layouts, at the real datasets' frame sizes
(no licence-restricted data is needed):

* CK+-like sequences: SynthFER onset -> apex sequences rendered at 256 px, grey, pasted into
  640 x 490 frames (CK+'s size) as PNG; ``prepare ckplus`` with dlib (the face is detected on
  the first frame, the 68 landmarks predicted in every frame, every frame aligned).
* KDEF-like stills: skimage's astronaut photograph (a real face), shifted a little per copy,
  in 562 x 762 JPEGs (KDEF's size); ``prepare kdef`` with dlib detection on every image.

Each number is wall-clock time of `prepare_dataset` (reading, face work, PNG encoding, writing
TFRecords), after one warm-up run, with TensorFlow already imported; frames/s = frames written
per second. Wall-clock time on a shared machine depends on what else runs; the machine is
named in the results.
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from benchmarks import _report  # noqa: E402
from fer_keras.data import synth  # noqa: E402
from fer_keras.data_prep.adapters import prepare_dataset  # noqa: E402

SIZE = 112
EMOTIONS = ("anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
CODES = {e: i + 1 for i, e in enumerate(EMOTIONS)}


def make_ckplus(root, sequences, frames):
    for i in range(sequences):
        emotion = EMOTIONS[i % len(EMOTIONS)]
        q = synth.render_sequence(synth.make_subject(i + 1), emotion, size=256, grey=True, num_frames=frames)
        subject, number = f"S{100 + i:03d}", "001"
        folder = root / "cohn-kanade-images" / subject / number
        folder.mkdir(parents=True)
        for t in range(frames):
            canvas = np.full((490, 640), 90, np.uint8)
            canvas[117:373, 192:448] = q["frames"][t][..., 0]
            Image.fromarray(canvas).save(folder / f"{subject}_{number}_{t + 1:08d}.png")
        label = root / "Emotion" / subject / number / f"{subject}_{number}_{frames:08d}_emotion.txt"
        label.parent.mkdir(parents=True)
        label.write_text(f"   {CODES[emotion]:.7e}\n")


def make_kdef(root, stills):
    import skimage.data

    photo = skimage.data.astronaut()
    for i in range(stills):
        canvas = np.full((762, 562, 3), 200, np.uint8)
        dx, dy = 10 + (i * 7) % 30, 100 + (i * 11) % 90
        canvas[dy : dy + 512, dx : dx + 512] = photo
        name = f"AF{i + 1:02d}HAS.JPG"
        (root / name[:4]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).save(root / name[:4] / name, quality=95)


def _load_models(_index=0):
    from fer_keras.data_prep import common, faces

    common._init_worker()
    start = time.perf_counter()
    faces._dlib_models()
    return time.perf_counter() - start


def worker_start_up(workers):
    """Seconds from creating the first pool of `workers` until each worker holds dlib's models.

    The pool's forkserver starts with the first pool of a process and loads the models once;
    later pools fork from it. So a `fer-keras prepare --workers N` command pays this once, and
    the runs timed after it here do not.
    """
    import concurrent.futures

    from fer_keras.data_prep import common

    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=common._context(True)) as pool:
        list(pool.map(_load_models, range(workers)))
    return time.perf_counter() - start


def timed(name, root, out, **kwargs):
    """-> (seconds, records written, items skipped, CPU seconds of this (the parent) process)."""
    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    manifest = prepare_dataset(name, root, out, size=SIZE, quiet=True, **kwargs)
    return time.perf_counter() - start, manifest["num_examples"], manifest["num_skipped"], time.process_time() - cpu


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--stills", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    rows, results = [], []
    start_up = {w: worker_start_up(w) for w in args.workers if w > 1}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        make_ckplus(tmp / "ck", args.sequences, args.frames)
        make_kdef(tmp / "kdef", args.stills)
        timed("ckplus", tmp / "ck", tmp / "warm", workers=1)  # warm-up: TF, dlib models, caches
        for workers in args.workers:
            for flow in (False, True):
                seconds, written, skipped, cpu = timed("ckplus", tmp / "ck", tmp / "out", workers=workers, flow=flow)
                frames = written * args.frames
                results.append({"input": "CK+-like sequences 640x490 grey", "task": "detect once + landmarks + align every frame"
                                + (" + flow" if flow else ""), "workers": workers, "frames": frames, "skipped_items": skipped,
                                "seconds": seconds, "frames_per_s": frames / seconds, "parent_cpu_s": cpu})
            seconds, written, skipped, cpu = timed("kdef", tmp / "kdef", tmp / "out", workers=workers)
            results.append({"input": "KDEF-like stills 562x762 RGB (real photo)", "task": "detect + landmarks + align",
                            "workers": workers, "frames": written, "skipped_items": skipped, "seconds": seconds,
                            "frames_per_s": written / seconds, "parent_cpu_s": cpu})
    for r in results:
        r["worker_start_up_s"] = start_up.get(r["workers"], 0.0)
        rows.append(f"| {r['input']} | {r['task']} | {r['workers']} | {r['frames']} | {r['skipped_items']} | {r['seconds']:.2f} "
                    f"| {r['frames_per_s']:.1f} | {1000 * r['parent_cpu_s'] / max(r['frames'], 1):.1f} |")
        print(rows[-1])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    _report.write_json("prepare", {"size": SIZE, "results": results, "cpu_count": os.cpu_count(),
                                   "worker_start_up_s": start_up, "load_average_1min": load})
    markdown = "\n".join([
        "## Dataset preparation (`benchmarks/prepare_benchmark.py`)",
        "",
        f"Face crops of {SIZE} px written as TFRecords by `prepare_dataset`, wall clock after a warm-up run, "
        f"on {_report.machine()}. Inputs are SynthFER sequences in CK+'s layout and frame size, and copies of "
        "a real photograph (skimage's astronaut) in KDEF's layout and image size.",
        "",
        "| input | work | workers | frames written | items skipped | seconds | frames/s | parent CPU ms/frame |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "A command with N > 1 workers first starts its worker pool (a forkserver that loads dlib's 68-point "
        "model once, then N forked workers): "
        + ", ".join(f"{s:.1f} s for {w} workers" for w, s in start_up.items())
        + " here, paid once per command and not included above. "
        + (f"The 1-minute load average was {load:.1f} on {os.cpu_count()} cores shared with other work, "
           "so worker processes competed for cores with other processes. " if load is not None else "")
        + "With workers, the parent process only serialises the records (PNG encoding through TensorFlow) and "
        "writes them; its CPU time per frame (last column) bounds what more workers can give on a larger machine.",
    ])
    _report.write_section("prepare", markdown)


if __name__ == "__main__":
    main()
