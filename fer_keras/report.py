"""The lines `fer-keras` prints about a finished export or training: the TFLite parity figures, the note below the
agreement target, and the note on a run that stayed at chance. The CLI only echoes them."""

import json
import pathlib


def parity_text(p):
    """The parity line's figures, from an export's metadata `parity`."""
    return (f"{p['samples']} {p['on']}: max |dp| {p['max_abs_diff']:.2e}, top-1 agreement {p['top1_agreement']:.3f} "
            f"(95 % CI {p['top1_agreement_95ci'][0]:.3f}-{p['top1_agreement_95ci'][1]:.3f}){ties_text(p)}, "
            f"accuracy Keras {p['keras_accuracy']:.3f} vs TFLite {p['tflite_accuracy']:.3f}{per_video_text(p)}")


def ties_text(parity):
    """'; N of the M disagreements are exact ties ...' where int8 rounding tied the top two classes, else ''."""
    ties, samples = parity.get("disagreements_at_ties") or 0, parity["samples"]
    if not ties:
        return ""
    disagreements = samples - round(parity["top1_agreement"] * samples)
    return (f"; {ties} of its {disagreements} disagreements are exact ties of the quantised top two classes "
            f"(the first label wins them)")


def per_video_text(parity):
    """', per video ...' for a clip model's parity (majority vote over each video's clips), else ''."""
    v = parity.get("per_video")
    if not v:
        return ""
    low, high = v["top1_agreement_95ci"]
    return (f"; per video (majority vote over its clips) top-1 agreement {v['top1_agreement']:.3f} on {v['videos']} "
            f"videos (95 % CI {low:.3f}-{high:.3f})")


def quantization_hint(quantize, agreement, *, streaming, clip=False, per_video=None, confident=None):
    """One line for a user whose int8 or int16x8 export agrees less than the target with float, else None.

    int16x8 of a clip model exists only as a streaming step model; float16 as either. `per_video`: a clip
    model's per-video agreement (`tflite.video_agreement`), named in the line when it meets the target.
    `confident`: `tflite.agreement`'s agreement where float is sure of its top class, named when there is any.
    """
    from fer_keras.exports.tflite import AGREEMENT_TARGET

    if quantize not in ("int8", "int16x8") or agreement >= AGREEMENT_TARGET:
        return None
    float16 = "--streaming --quantize float16" if streaming else "--quantize float16"
    int16x8 = "--streaming --quantize int16x8" if streaming or clip else "--quantize int16x8"
    closer = f"{int16x8} (int16 activations) or {float16} stay" if quantize == "int8" else f"{float16} stays"
    video = ""
    if per_video and per_video["top1_agreement"] >= AGREEMENT_TARGET:
        video = f" Per video (the majority vote over its clips) it agrees {per_video['top1_agreement']:.1%}."
    unit = " per clip" if streaming or clip else ""
    sure = ""
    if confident and confident["top1_agreement"] is not None:
        what = "clips" if streaming or clip else "samples"
        low, high = confident["top1_agreement_95ci"]
        count = f", {confident['samples']} {what}" if confident.get("samples") is not None else ""
        sure = (f" Where float gives its top class at least {confident['threshold']:.0%} ({confident['share']:.0%} of the "
                f"{what}{count}), it agrees {confident['top1_agreement']:.1%} (95 % CI {low:.1%}-{high:.1%}).")
    return (f"Note: {quantize} agrees {agreement:.1%} with float{unit}, below {AGREEMENT_TARGET:.0%}; {closer} closer to "
            f"float (docs/benchmarks.md, \"int8 TFLite parity\").{sure}{video}")


# A classifier whose training accuracy stays within this of chance over its last CHANCE_EPOCHS epochs learned nothing.
CHANCE_MARGIN = 0.05
CHANCE_EPOCHS = 3
TINY_LR = 1e-5  # at or below it, a run at chance moved too little: the note suggests a higher rate


def chance_hint(run_dir):
    """One line when a finished classifier run stayed at chance on its own training data, else None.

    Measured: frame_cnn on SynthFER stills (24 subjects, 48 px, lr 2e-3) learned with seeds 0 and 2 and stayed at
    chance for all 80 epochs with seed 1 (training accuracy 11-14 %, loss ln 7), and learned at lr 1e-3; arm_resnet18
    there was still at chance after 20 epochs on two seeds and learned by 40-60.
    Runs shorter than 2 * CHANCE_EPOCHS epochs and runs without a training accuracy (vae_swap) are not judged.
    """
    import csv

    run_dir = pathlib.Path(run_dir)
    history = run_dir / "history.csv"
    try:
        config = json.loads((run_dir / "config.json").read_text())
        rows = list(csv.DictReader(history.open()))
        labels = len(config["dataset"]["labels"])
        accuracy = [float(r["accuracy"]) for r in rows[-CHANCE_EPOCHS:]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if len(rows) < 2 * CHANCE_EPOCHS or labels < 2 or max(accuracy) > 1 / labels + CHANCE_MARGIN:
        return None
    return (f"Note: {config['model']} stayed at chance on its own training data (accuracy {max(accuracy):.1%} over the "
            f"last {CHANCE_EPOCHS} epochs, chance {1 / labels:.1%}); train again with more --epochs, "
            f"{'a higher' if config['learning_rate'] <= TINY_LR else 'a lower'} --lr (this run: "
            f"{config['learning_rate']:g}) or another --seed.")
