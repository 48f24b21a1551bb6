"""Prepared folders of several datasets -> one folder, for training on their union (paper 004, sec. 5.1).

Paper 004 trains its identity/expression VAE on frames of MUG, CK+ and RAVDESS together (195
training subjects). ``fer-keras prepare merge --from A --from B ... --out DIR`` copies the records
of folders made by ``fer-keras prepare`` into one, unchanged but for two fields:

* the subject id becomes ``<people>/<id>`` (``ckplus/S005``, ``mug/001``, ``synthfer seed 0/s0003``),
  where people is `fit.people` of the source: two datasets' subjects never share an id, and the
  subject-leak checks map each merged subject back to its dataset's person;
* a sample's source path and a video's id become ``<people>/<path>`` and ``<people>/<id>`` as well;
* the label is re-indexed into one label set, by emotion name (a record whose emotion the set
  lacks, such as CK+'s contempt in basic7, is listed in skipped.csv).

The sources must hold the same kind of record at the same image size and channels, and all or
none optical flow. Stills of some sources without 68 landmarks are merged with a note (landmark_arm
then refuses the merge). The merged folder is split by subject at train time (the sources' own splits,
such as RAF-DB's, are not kept). Its manifest lists the sources (``merged_from``).

Example (paper 004's training set, and its evaluation set):
    fer-keras prepare merge --from data/mug_spread --from data/ckplus_spread --from data/ravdess_spread \\
        --out data/p004_spread --label-set basic7
    fer-keras prepare merge --from data/mug_apex --from data/ckplus_still --out data/p004_apex --label-set basic7
"""

import os
import pathlib
import shutil
import sys

from fer_keras.errors import UserError

RECORDS_PER_SHARD = {"still": 512, "sequence": 16}


def merge_prepared(sources, out, *, label_set=None, quiet=False):
    """Writes the union of the prepared folders `sources` into `out` (see the module docstring); returns its manifest.

    `label_set`: the merged folder's label set; None when every source has the same one. `out` is
    built in ``<out>.partial`` and renamed when complete; the same call on a finished `out` returns
    its manifest (``_already``).
    """
    import tensorflow as tf

    from fer_keras.data import records
    from fer_keras.data_prep import common
    from fer_keras.labels import LABEL_SETS, get_label_set
    from fer_keras.progress import progress
    from fer_keras.training.fit import data_fingerprint, people

    dirs = [pathlib.Path(s).expanduser().resolve() for s in sources]
    if len(dirs) < 2:
        raise UserError("prepare merge needs at least two --from folders.")
    if len(set(dirs)) < len(dirs):
        raise UserError("A --from folder is given twice; each source is merged once.")
    manifests = [records.read_manifest(d, verify=True) for d in dirs]
    for d, m in zip(dirs, manifests):
        if m.get("merged_from"):
            raise UserError(f"{str(d)!r} is itself a merge; merge the folders it was made from.")
    first = manifests[0]
    for d, m in zip(dirs[1:], manifests[1:]):
        for key, what in (("kind", "record kind"), ("image", "image size and channels")):
            if m.get(key) != first.get(key):
                raise UserError(f"{str(d)!r} holds another {what} ({m.get(key)}) than {str(dirs[0])!r} "
                                f"({first.get(key)}); merge folders prepared alike.")
        if bool(m.get("flow_bound")) != bool(first.get("flow_bound")):
            raise UserError(f"{str(d)!r} and {str(dirs[0])!r} differ in optical flow (prepared with --flow or not); "
                            "merge folders prepared alike.")
    sets = list(dict.fromkeys(m["label_set"] for m in manifests))
    if label_set is None:
        if len(sets) > 1:
            raise UserError(f"The folders have label sets {', '.join(sets)}; choose the merged one with --label-set "
                            f"(one of {sorted(LABEL_SETS)}; records of an emotion it lacks are skipped).")
        label_set = sets[0]
    if label_set not in LABEL_SETS:
        raise UserError(f"--label-set must be one of {sorted(LABEL_SETS)}. Received: {label_set!r}")
    names = get_label_set(label_set)
    who = [people(m) for m in manifests]
    prints = [data_fingerprint(m) for m in manifests]
    for i in range(len(dirs)):
        for j in range(i):
            if prints[i] == prints[j]:
                raise UserError(f"{str(dirs[j])!r} and {str(dirs[i])!r} hold the same records (one is a copy of the "
                                "other); merge each dataset once.")
            if who[i] == who[j]:
                hint = (" If they are other people, prepare one of them again with `prepare folder --name`."
                        if who[i].startswith("folder:") else "")
                print(f"Note: {str(dirs[j])!r} and {str(dirs[i])!r} hold the same people ({who[i]}): a subject id in "
                      f"both is one person in the merge, and a sample in both is counted twice.{hint}", file=sys.stderr)
    official = [str(d) for d, m in zip(dirs, manifests) if m.get("official_split")]
    if official:
        print(f"Note: the merge is split by subject at train time; the official split of {', '.join(official)} is not "
              "kept (its test samples join the folds).", file=sys.stderr)
    # stills: whether each source has 68 landmarks (a folder has them all, or none), for landmark_arm's check in train
    with_points = [bool(records.stills_with_landmarks(m, limit=1)) if m["kind"] == "still" else None for m in manifests]
    if any(with_points) and not all(with_points):
        bare = [str(d) for d, has in zip(dirs, with_points) if not has]
        print(f"Note: {', '.join(map(repr, bare))} {'holds' if len(bare) == 1 else 'hold'} no 68 landmarks and the "
              "other folders do: landmark_arm, which draws its heatmaps from them, will not train on this merge.",
              file=sys.stderr)
    sources_record = [{"dir": str(d), "dataset": m["dataset"], "people": p, "label_set": m["label_set"],
                       "protocol": m.get("params", {}).get("protocol"), "num_examples": m["num_examples"],
                       "data_fingerprint": data_fingerprint(m), "landmarks": points}
                      for d, m, p, points in zip(dirs, manifests, who, with_points)]

    out = pathlib.Path(out).expanduser().absolute()
    if any(out.resolve() == d or d in out.resolve().parents for d in dirs):
        raise UserError(f"--out {str(out)!r} is inside a --from folder; write the merge beside them.")
    why = ""
    if (out / records.MANIFEST).exists():
        done = records.read_manifest(out)
        if done.get("merged_from") == sources_record and done.get("label_set") == label_set:
            done["_already"] = True
            return done
        why = f" ({_what_differs(done, sources_record, label_set)})"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"Output folder {str(out)!r} already exists and is not this merge{why}; choose another --out "
                        "or delete it.")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        raise UserError(f"{str(partial)!r} exists (a merge that stopped, or not fer-keras's); delete it, then run the "
                        "same command again.")

    kind = first["kind"]
    example = tf.train.SequenceExample if kind == "sequence" else tf.train.Example
    skipped = []
    extra = {"image": first["image"], "flow_bound": first.get("flow_bound"), "official_split": False,
             "merged_from": sources_record, "skipped_file": common.SKIPPED}
    try:
        with progress(total=sum(m["num_examples"] for m in manifests), desc="merge", unit="record", quiet=quiet) as bar, \
                records.ShardedWriter(partial, kind=kind, dataset="+".join(m["dataset"] for m in manifests),
                                      label_set=label_set, records_per_shard=RECORDS_PER_SHARD[kind],
                                      params={"sources": [str(d) for d in dirs]}, extra=extra) as writer:
            for d, manifest, person in zip(dirs, manifests, who):
                for serialized in tf.data.TFRecordDataset(records.shard_paths(manifest)):
                    record = example.FromString(serialized.numpy())
                    features = (record.context if kind == "sequence" else record.features).feature
                    emotion = features["label/name"].bytes_list.value[0].decode()
                    source = features["source/path"].bytes_list.value[0].decode()
                    bar.update(1)
                    if emotion not in names:
                        skipped.append([f"{d.name}/{source}", f"label {emotion} is not in label set {label_set}"])
                        continue
                    subject = f"{person}/{features['subject/id'].bytes_list.value[0].decode()}"
                    features["subject/id"].bytes_list.value[:] = [subject.encode()]
                    # a sample's and a video's id too: two datasets (or SynthFER seeds) may use the same
                    features["source/path"].bytes_list.value[:] = [f"{person}/{source}".encode()]
                    if kind == "sequence":
                        video = features["sequence/id"].bytes_list.value[0].decode()
                        features["sequence/id"].bytes_list.value[:] = [f"{person}/{video}".encode()]
                    features["label/index"].int64_list.value[:] = [names.index(emotion)]
                    features["label/set"].bytes_list.value[:] = [label_set.encode()]
                    writer.add(record.SerializeToString(deterministic=True), emotion, subject)
            writer.extra["num_skipped"] = len(skipped)
            if not writer.counts_per_subject:
                raise UserError(f"No record of the --from folders has an emotion of label set {label_set} "
                                f"({', '.join(names)}).")
        common._write_skipped(partial / common.SKIPPED, skipped)
        if out.exists():  # an empty folder
            out.rmdir()
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return records.read_manifest(out)


def _what_differs(done, sources, label_set):
    """Why the merge finished in a folder is not the one asked for, in a few words."""
    before = done.get("merged_from") or []
    if not before:
        return "it is a prepared dataset, not a merge"
    if [s["dir"] for s in before] != [s["dir"] for s in sources]:
        same = sorted(s["dir"] for s in before) == sorted(s["dir"] for s in sources)
        return "its --from folders were given in another order" if same else "its --from folders were others"
    changed = [s["dir"] for s, b in zip(sources, before) if s != b]
    if changed:
        return f"{', '.join(changed)} changed since it was made: merge again into another --out"
    return f"its label set is {done.get('label_set')}, not {label_set}"


def summary(manifest):
    """One line for the CLI: what was merged."""
    subjects = len(manifest["counts_per_subject"])
    line = (f"{'Already merged' if manifest.get('_already') else 'Merged'} {manifest['num_examples']} {manifest['kind']} "
            f"records of {subjects} subjects from {len(manifest['merged_from'])} folders ({manifest['dataset']}, "
            f"label set {manifest['label_set']}) in {manifest['_dir']}")
    if manifest.get("num_skipped"):
        line += f"; skipped {manifest['num_skipped']} (see {manifest['_dir']}/{manifest['skipped_file']})"
    return line
