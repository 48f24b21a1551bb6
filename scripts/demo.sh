#!/usr/bin/env bash
# The main job end to end on SynthFER: generate -> TFRecords -> train a small model -> evaluate on
# held-out subjects -> export TFLite (float32 and int8) and time it -> predict on new faces -> summary.
# Every step is a plain `fer-keras` command, so it doubles as a walkthrough.
set -euo pipefail
OUT=${DEMO_DIR:-demo}
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n== %s\n' "$*"; }

step "1/7 SynthFER preview grid"
fer-keras synth preview --out "$OUT/synthfer_preview.png"

step "2/7 prepare 40 SynthFER subjects into TFRecords (64 px grey, basic7)"
fer-keras prepare synth --out "$OUT/data" --subjects 40 --samples-per-emotion 6 --size 64

step "3/7 train frame_cnn (subject 5-fold split: 24 train, 8 validation, 8 test subjects)"
fer-keras train --model frame_cnn --data "$OUT/data" --epochs 20 --out "$OUT/runs" --name frame_cnn

step "4/7 evaluate on the 8 held-out test subjects"
fer-keras evaluate "$OUT/runs/frame_cnn"

step "5/7 export TFLite float32 and int8 (builtin ops only, parity-checked in LiteRT); time int8 on this CPU"
fer-keras export "$OUT/runs/frame_cnn" --format tflite --out "$OUT/exports"
fer-keras export "$OUT/runs/frame_cnn" --format tflite --quantize int8 --out "$OUT/exports"
fer-keras benchmark "$OUT/exports/frame_cnn/tflite/model_int8.tflite" --threads 1 --out "$OUT/latency.json"

step "6/7 predict on faces of new SynthFER identities (seed 7, never seen in training)"
fer-keras synth generate --out "$OUT/faces" --subjects 2 --size 64 --grey --seed 7
fer-keras predict "$OUT/exports/frame_cnn/tflite/model_int8.tflite" "$OUT/faces" --detect none --out "$OUT/predictions.jsonl"

step "7/7 summary"
python - "$OUT" "$(( $(date +%s) - start ))" <<'PY'
import csv, json, pathlib, sys
out, seconds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
m = json.loads((out / "runs/frame_cnn/metrics.json").read_text())
truth = {r["file"]: r["emotion"] for r in csv.DictReader(open(out / "faces/labels.csv"))}
preds = [json.loads(l) for l in open(out / "predictions.jsonl")]
right = sum(truth.get(pathlib.Path(p["file"]).name) == p["label"] for p in preds if "label" in p)
known = sum(pathlib.Path(p["file"]).name in truth and truth[pathlib.Path(p["file"]).name] in m["per_class_accuracy"] for p in preds)
f32 = json.loads((out / "exports/frame_cnn/tflite/model_none.json").read_text())["parity"]
i8 = json.loads((out / "exports/frame_cnn/tflite/model_int8.json").read_text())["parity"]
print(f"Dataset: SynthFER (synthetic; not a result on any real dataset), label set {m['label_set']}")
print(f"Test accuracy on {m['subjects']} held-out subjects: {m['accuracy']:.3f} (mean class accuracy {m['mean_class_accuracy']:.3f}, {m['num_samples']} images)")
print("Largest confusions: " + ", ".join(f"{t}->{p} ({n})" for t, p, n in m["largest_confusions"]))
print(f"TFLite float32: max |dp| {f32['max_abs_diff']:.1e} vs Keras; int8: top-1 agreement {i8['top1_agreement']:.3f}, accuracy drop {i8['accuracy_drop']:+.3f}")
speed = json.loads((out / "latency.json").read_text())
print(f"int8 TFLite on this CPU ({speed['machine']['cpu']}, 1 thread): {speed['timings'][0]['median_ms']:.2f} ms per face (median of {speed['runs']})")
print(f"Predict (int8 TFLite) on {known} faces of new identities with labels in the set: {right} correct")
print(f"Outputs in {out}/: synthfer_preview.png, runs/frame_cnn/ (metrics.json, confusion_matrix.png), exports/, latency.json, predictions.jsonl")
print(f"Demo time: {seconds} s")
PY
