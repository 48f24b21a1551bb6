"""`fer-keras prepare synth`: SynthFER samples -> sharded TFRecords + manifest.

Subject k is ``synthNNNN``; its images depend only on (seed, k), so a larger set extends a
smaller one. The folder is written as ``<out>.partial`` and renamed when complete; run again with
the same arguments, the command finds the finished folder and returns it, as the dataset adapters do.
"""

import contextlib
import json
import pathlib

from fer_keras.data import records, synth
from fer_keras.data_prep.flow import sequence_flow
from fer_keras.data_prep.output import staged_output
from fer_keras.errors import UserError
from fer_keras.labels import get_label_set
from fer_keras.progress import progress


def subject_name(k):
    return f"synth{k:04d}"


def _finished(out, params, label_set):
    """The manifest of `out` when it is a finished SynthFER set made with these arguments (shards verified), else None."""
    path = pathlib.Path(out) / records.MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("params") != params or manifest.get("label_set") != label_set:
        return None
    return records.read_manifest(out, verify=True)


def prepare_synth(
    out,
    *,
    kind="still",
    subjects=30,
    samples_per_emotion=4,
    sequences_per_emotion=1,
    size=64,
    grey=True,
    label_set="basic7",
    flow=False,
    seed=0,
    sequence_kind="onset_apex",
    capture="wild",
    quiet=False,
    records_per_shard=512,
):
    """Generates and writes a SynthFER dataset; returns the manifest.

    `capture`: "wild" (every image its own scene and pose) or "lab" (one session per subject, like
    CK+/MUG/JAFFE); see `fer_keras.data.synth.CAPTURES`.
    """
    if flow and kind != "sequence":
        raise UserError("--flow needs sequence records; SynthFER stills have none (add --kind sequence).")
    if capture not in synth.CAPTURES:
        raise UserError(f"capture must be one of {', '.join(synth.CAPTURES)}. Received: {capture!r}")
    emotions = get_label_set(label_set)
    per_subject = len(emotions) * (samples_per_emotion if kind == "still" else sequences_per_emotion)
    params = {
        "generator": "SynthFER",
        "kind": kind,
        "subjects": subjects,
        "samples_per_emotion": samples_per_emotion,
        "sequences_per_emotion": sequences_per_emotion,
        "size": size,
        "grey": grey,
        "flow": flow,
        "seed": seed,
        "sequence_kind": sequence_kind,
        "capture": capture,
    }
    finished = _finished(out, params, label_set)
    if finished is not None:
        return finished
    target = pathlib.Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise UserError(f"Output folder {str(out)!r} already exists and is not a SynthFER set made with these arguments; "
                        "choose another --out or delete it.")
    with staged_output(out) as tmp, records.ShardedWriter(
        tmp,
        kind=kind,
        dataset="synthfer",
        label_set=label_set,
        records_per_shard=records_per_shard,
        params=params,
        extra={"image": {"size": size, "channels": 1 if grey else 3}, "flow_bound": records.DEFAULT_FLOW_BOUND if flow else None},
    ) as writer, contextlib.closing(
        progress(total=subjects * per_subject, desc=f"SynthFER {kind}s", unit=kind, quiet=quiet)
    ) as bar:
        for k in range(subjects):
            subject = synth.make_subject(k, seed=seed)
            name = subject_name(k)
            for emotion in emotions:
                count = samples_per_emotion if kind == "still" else sequences_per_emotion
                for i in range(count):
                    if kind == "still":
                        s = synth.render_still(subject, emotion, sample_index=i, seed=seed, size=size, grey=grey,
                                               capture=capture)
                        sample = dict(s, subject_id=name, au_ids=synth.AUS, source_path=f"synth://{name}/{emotion}/{i}")
                        record = records.make_still_example(sample, label_set=label_set, dataset="synthfer")
                    else:
                        s = synth.render_sequence(subject, emotion, sequence_index=i, seed=seed, size=size, grey=grey,
                                                  kind=sequence_kind, capture=capture)
                        sample = dict(
                            s,
                            subject_id=name,
                            sequence_id=f"{name}_{emotion}_{i}",
                            au_ids=synth.AUS,
                            source_path=f"synth://{name}/{emotion}/seq{i}",
                        )
                        record = records.make_sequence_example(
                            sample, label_set=label_set, dataset="synthfer", flow=sequence_flow(s["frames"]) if flow else None
                        )
                    writer.add(record, emotion, name)
                    bar.update(1)
    return records.read_manifest(out)
