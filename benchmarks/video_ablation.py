"""The video configurations of papers 000/001 under one subject-independent protocol (issue 3).

ConvGRU, ConvLSTM, EConvGRU, EConvLSTM (paper 000, two-stream: RGB + optical flow) and ConvLSTM+RAM,
EConvLSTM+RAM with their RGB ConvLSTM / EConvLSTM baselines (paper 001, RGB only), each trained and tested on every fold of a subject k-fold split of a SynthFER sequence set
(ckplus7 labels, onset -> apex like CK+), scored per video by majority vote over 8-frame clips
overlapping by 6. Written beside the papers' CK+ numbers; the two are different datasets and
only the orderings can be compared.

Writes benchmarks/results/video_ablation.json and the "video_ablation" section of
docs/benchmarks.md. Each finished fold is kept under --work, so an interrupted run continues.

Usage: python benchmarks/video_ablation.py [--folds 5] [--epochs 4] [--subjects 20] [--size 48] [--capture wild|lab]
                                          [--models convgru,convlstm,...] [--report-only]

Several invocations with different --models may share one --work (e.g. one per core); a last one with
--report-only writes the report of every row.

`--capture lab` records each SynthFER subject in one session (scene and base pose shared by all of
their sequences), as CK+ is recorded; its results go to their own JSON and docs section
(`video_ablation_lab`), so the two regimes are reported side by side.
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._report import machine, write_json, write_section  # noqa: E402

# (row, model, streams, paper, the paper's CK+ 10-fold video accuracy %). Each row gets its paper's input: paper 000's
# network is two-stream (an RGB and an optical-flow sequence, section 2.2); paper 001's (RAM and its ConvLSTM /
# Enhanced ConvLSTM baselines of Table 1) reads RGB clips only.
CONFIGS = [
    ("convgru", "convgru", "rgb,flow", "000", 86.54),
    ("convlstm", "convlstm", "rgb,flow", "000", 85.93),
    ("econvgru", "econvgru", "rgb,flow", "000", 88.99),
    ("econvlstm", "econvlstm", "rgb,flow", "000", 90.52),
    ("convlstm_rgb", "convlstm", "rgb", "001", 86.85),
    ("econvlstm_rgb", "econvlstm", "rgb", "001", 90.21),
    ("convlstm_ram", "convlstm_ram", "rgb", "001", 92.97),
    ("econvlstm_ram", "econvlstm_ram", "rgb", "001", 95.11),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--sequences-per-emotion", type=int, default=1)
    parser.add_argument("--work", default="runs/video_ablation")
    parser.add_argument("--models", default=",".join(c[0] for c in CONFIGS), help="Comma-separated rows (first column of CONFIGS).")
    parser.add_argument("--only-folds", default=None, help="Comma-separated folds to run (default: all); e.g. to split one row's folds across cores.")
    parser.add_argument("--report-only", action="store_true", help="Rewrite the report from the finished folds; train nothing.")
    parser.add_argument("--capture", choices=("wild", "lab"), default="wild")
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    name = "video_ablation" if args.capture == "wild" else f"video_ablation_{args.capture}"

    from fer_keras.data import records
    from fer_keras.data_prep.synth import prepare_synth
    from fer_keras.evaluation.evaluate import evaluate_run
    from fer_keras.training.config import resolve
    from fer_keras.training.fit import train

    work = pathlib.Path(args.work)
    data = work / "data"
    if not (data / records.MANIFEST).exists():
        prepare_synth(data, kind="sequence", subjects=args.subjects, sequences_per_emotion=args.sequences_per_emotion, size=args.size,
                      grey=True, label_set="ckplus7", capture=args.capture, flow=True, quiet=True)
    wanted = [c for c in CONFIGS if c[0] in args.models.split(",")]
    # Fold by fold across the models, so a run cut short still compares every model on the same folds.
    per_model = {row: [] for row, *_ in wanted}
    folds = range(args.folds) if args.only_folds is None else sorted(int(f) for f in args.only_folds.split(","))
    for fold in folds:
        for row, model, streams, _, _ in wanted:
            run = work / row / f"fold-{fold}"
            if not (run / "metrics.json").exists():
                if args.report_only:
                    continue
                start = time.time()
                if run.exists():
                    import shutil

                    shutil.rmtree(run)
                config = resolve(None, model=model, data=str(data), epochs=args.epochs, batch_size=16, streams=streams,
                                 learning_rate=args.lr, folds=args.folds, fold=fold, seed=fold)
                train(config, out=work / row, name=f"fold-{fold}", quiet=True)
                metrics = evaluate_run(run)
                metrics["seconds"] = time.time() - start
                (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
            metrics = json.loads((run / "metrics.json").read_text())
            per_model[row].append(dict(metrics, fold=fold))
            print(f"{row} fold {fold}: video {metrics['video']['accuracy']:.3f} clip {metrics['accuracy']:.3f}", flush=True)
    # Rows may have finished different folds (parallel invocations, a run cut short): each row is reported over its
    # own folds, and each of the papers' orderings is tested on the folds both of its rows finished (paired).
    rows_done = {row: folds for row, folds in per_model.items() if folds}
    if rows_done:
        report(name, args, [c for c in wanted if c[0] in rows_done], rows_done)


def command(args):
    """The command line that reproduces a report: every setting the table depends on."""
    return (f"benchmarks/video_ablation.py --capture {args.capture} --subjects {args.subjects} --epochs {args.epochs} "
            f"--lr {args.lr:g} --folds {args.folds} --size {args.size} --sequences-per-emotion {args.sequences_per_emotion}")


def report(name, args, wanted, per_model):
    """JSON + docs section from the folds finished so far (per row; the "folds" column says which)."""
    import numpy as np

    results = {}
    for model, _, streams, paper, paper_acc in wanted:
        folds = per_model[model]
        video = [m["video"]["accuracy"] for m in folds]
        clip = [m["accuracy"] for m in folds]
        results[model] = {"paper": paper, "paper_ckplus_video_accuracy": paper_acc, "streams": streams,
                          "video_mean": float(np.mean(video)), "video_std": float(np.std(video)),
                          "clip_mean": float(np.mean(clip)), "clip_std": float(np.std(clip)),
                          "per_fold_video": video, "folds": [m["fold"] for m in folds],
                          "seconds": float(sum(m.get("seconds", 0.0) for m in folds))}
    done = min(len(r["folds"]) for r in results.values())

    verdict = _verdict(results)
    write_json(name, {"args": vars(args), "folds_done": done, "results": results, "verdict": verdict})

    def spread(r, v):  # no std over a single fold
        return f" +- {100 * v:.1f}" if len(r["folds"]) > 1 else ""

    rows = "\n".join(
        f"| {m} | {r['streams'].replace(',', ' + ')} | {r['paper']} | {r['paper_ckplus_video_accuracy']:.2f} | {100 * r['video_mean']:.1f}{spread(r, r['video_std'])} "
        f"| {100 * r['clip_mean']:.1f}{spread(r, r['clip_std'])} | {len(r['folds'])} | {r['seconds'] / 60:.1f} |"
        for m, r in results.items()
    )
    capture = {"wild": "wild capture: every sequence its own scene and pose",
               "lab": "lab capture: one session per subject, as CK+ is recorded"}[args.capture]
    write_section(name, f"""## Video models: the configurations of papers 000/001, SynthFER {args.capture} capture (`{command(args)}`)

SynthFER sequences ({capture}; onset -> apex, {args.subjects} subjects x 7 ckplus7 emotions x {args.sequences_per_emotion} sequence(s), {args.size} px grey), subject
{args.folds}-fold cross-validation (sorted subject ids, rank mod {args.folds}; {args.folds} rather than the papers' 10
folds because of CPU time{f"; **not every row finished all {args.folds} folds**: each row's mean +- std is over the folds in its 'folds' column (folds 0, 1, ... in order)" if done < args.folds else ""}), `small` model size, {args.epochs} epochs, batch 16, Adam learning rate {args.lr:g}, clips of 8 frames with stride 2,
video label by majority vote over its clips. Each row gets its paper's input: paper 000's two-stream network reads RGB
and optical flow (Farneback, computed when the records are prepared); paper 001's RAM models and their ConvLSTM /
Enhanced ConvLSTM baselines (rows `*_rgb`, paper 001 Table 1) read RGB only. {machine()}. The paper column is CK+
(paper 000 Table / paper 001 Table 1) and is a different dataset: compare orderings, not values.

| row | input | paper | paper: CK+ video acc. % | SynthFER video acc. % | SynthFER clip acc. % | folds | minutes |
|---|---|---|---|---|---|---|---|
{rows}

{verdict}
""")


# The orderings papers 000/001 report on CK+: (better, worse).
PAPER_ORDERINGS = [
    ("convgru", "convlstm"),  # paper 000, two-stream
    ("econvgru", "convgru"),
    ("econvlstm", "convlstm"),
    ("econvlstm", "econvgru"),
    ("econvlstm_rgb", "convlstm_rgb"),  # paper 001 Table 1, RGB
    ("convlstm_ram", "convlstm_rgb"),
    ("econvlstm_ram", "econvlstm_rgb"),
    ("econvlstm_ram", "convlstm_ram"),
]


def _verdict(results):
    """Which of the papers' pairwise orderings hold on SynthFER, judged per fold (paired, on the folds both rows finished)."""
    import numpy as np

    chance = 1.0 / 7
    near = [m for m, r in results.items() if r["video_mean"] < chance + 0.10]
    best = max(r["video_mean"] for r in results.values())
    if best < chance + 0.10 and min(len(r["folds"]) for r in results.values()) > 1:
        return (f"**Every configuration is within 10 points of chance ({100 * chance:.1f} % for 7 classes): at this "
                "budget the models have not learned, so none of the papers' orderings can be confirmed or refuted "
                "here.** A meaningful run needs more subjects and epochs (hours on 2 CPU cores, or a GPU).")
    order = sorted(results, key=lambda m: -results[m]["video_mean"])
    lines = ["Order on SynthFER (mean video accuracy over each row's folds, best first): " + " > ".join(order) + ".",
             f"Within 10 points of chance ({100 * chance:.1f} % for 7 classes): {', '.join(near) or 'none'}.", "",
             "The papers' pairwise orderings, tested per fold (paired: same test subjects, on the folds both rows finished; "
             "'holds' needs the mean difference above 2 standard errors and a win in most folds):", ""]
    for better, worse in PAPER_ORDERINGS:
        if better not in results or worse not in results:
            continue
        a, b = results[better], results[worse]
        common = sorted(set(a["folds"]) & set(b["folds"]))
        diff = np.array([a["per_fold_video"][a["folds"].index(f)] - b["per_fold_video"][b["folds"].index(f)] for f in common])
        wins = int((diff > 0).sum())
        if len(diff) < 2:
            lines.append(f"- {better} > {worse}: not tested (only {len(diff)} common fold; difference "
                         f"{100 * float(diff.mean()):+.1f} points there).")
            continue
        mean, sem = float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))
        if mean > 2 * sem and wins > len(diff) / 2:
            status = "holds"
        elif mean < -2 * sem and wins < len(diff) / 2:
            status = "reversed"
        else:
            status = "not resolved (difference within 2 standard errors)"
        lines.append(f"- {better} > {worse}: {status}; difference {100 * mean:+.1f} +- {100 * sem:.1f} points "
                     f"(standard error over folds), better in {wins} of {len(diff)} folds.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
