"""int8_parity's per-video measurement: a real run and a real .tflite, and the sentence the report builds from it."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks.int8_parity import per_video, verdict  # noqa: E402


def test_a_float32_export_decides_every_video_as_keras_does(clip_run, tmp_path):
    from fer_keras.data.splits import Split
    from fer_keras.exports.tflite import export_tflite
    from fer_keras.training import fit

    path, _ = export_tflite(clip_run, out=tmp_path, quantize="none")
    got = per_video(clip_run, path)
    config, manifest, _ = fit.load_run(clip_run)
    split = Split.from_dict(config["split_subjects"])
    videos, clips = set(), 0
    for _, _, meta in fit.make_dataset(config, manifest, split, "test", batch_size=64, with_meta=True):
        videos.update(meta["video"].numpy().tolist())
        clips += len(meta["video"])
    assert (got["videos"], got["clips"]) == (len(videos), clips)
    # float32 TFLite matches Keras to 1e-4: the same clip, last-clip and video decisions
    assert got["clip_agreement"] == got["last_clip_agreement"] == got["video_agreement"] == 1.0
    assert got["float_video_accuracy"] == got["int8_video_accuracy"]
    assert 0.0 <= got["video_agreement_95ci"][0] < 1.0 == got["video_agreement_95ci"][1]


def test_the_report_names_each_runs_video_agreement():
    row = {"samples": 200, "top1_agreement": 0.9, "top1_agreement_95ci": [0.85, 0.93], "meets_target": False}
    result = {"int8": row, "stream_int8": row, "above_chance": True, "float_accuracy": 0.5,
              "int8_per_video": {"videos": 35, "clips": 239, "video_agreement": 34 / 35, "video_agreement_95ci": [0.855, 0.995],
                                 "last_clip_agreement": 33 / 35, "float_video_accuracy": 22 / 35,
                                 "int8_video_accuracy": 23 / 35, "clip_agreement": 0.9}}
    text = verdict({"results": {"lab": result}, "target_top1_agreement": 0.97})
    line = next(ln for ln in text.splitlines() if ln.startswith("- Per video"))
    assert "`lab` 97.1 % of 35 videos (85.5-99.5)" in line
    assert "`lab` 94.3 %" in line and "`lab` 62.9 % (int8 65.7 %)" in line


def test_a_given_runs_description_names_its_learning_rate_when_known():
    from benchmarks.int8_parity import report

    row = {"samples": 200, "keras_accuracy": 0.5, "tflite_accuracy": 0.5, "accuracy_drop": 0.0, "top1_agreement": 0.98,
           "top1_agreement_95ci": [0.95, 0.99], "meets_target": True}
    given = {"kind": "clip", "family": "convrnn", "model": "convgru", "epochs": 20, "image_size": 48, "run": "/r/a",
             "streams": "rgb,flow", "capture": "lab", "clip_length": 8, "fold": 0, "folds": 5, "subjects": 24,
             "float_accuracy": 0.5, "above_chance": True, "int8": row}
    args = {"still_subjects": 24, "per_emotion": 6, "sequence_subjects": 12, "sequences_per_emotion": 2, "clip_length": 6,
            "clip_stride": 3}
    data = {"args": args, "target_top1_agreement": 0.97, "learning_rate": 0.002, "skipped": {},
            "results": {"old": given, "new": dict(given, learning_rate=0.001)}}
    text = report(data)
    assert "`new` = convrnn model `convgru`" in text and "20 epochs, learning rate 0.001" in text
    old = text.split("`old` = ")[1].split(";")[0]
    assert "learning rate" not in old  # a result cached before the field existed says nothing rather than a guess


def test_the_report_marks_int8_rows_measured_before_the_logit_floor():
    from benchmarks.int8_parity import report

    row = {"samples": 200, "keras_accuracy": 0.5, "tflite_accuracy": 0.5, "accuracy_drop": 0.0, "top1_agreement": 0.98,
           "top1_agreement_95ci": [0.95, 0.99], "meets_target": True}
    still = {"kind": "still", "family": "baseline", "epochs": 8, "image_size": 48, "above_chance": True, "int8": row}
    args = {"still_subjects": 24, "per_emotion": 6, "sequence_subjects": 12, "sequences_per_emotion": 2, "clip_length": 6,
            "clip_stride": 3}
    data = {"args": args, "target_top1_agreement": 0.97, "learning_rate": 0.002, "skipped": {},
            "results": {"before": still, "after": dict(still, logit_floor=4.0)}}
    rows = {line.split(" | ")[0].strip("| "): line for line in report(data).splitlines() if line.startswith("| before") or line.startswith("| after")}
    assert "| int8 † |" in rows["before"]
    assert "| int8 |" in rows["after"] and "†" not in rows["after"]
