"""Prediction records to JSON lines (default, and stdout) or CSV."""

import csv
import io
import json
import os
import pathlib
import sys


def write_records(records, out=None):
    if out is None:
        for r in records:
            sys.stdout.write(json.dumps(r) + "\n")
        return
    out = pathlib.Path(out)
    if out.suffix.lower() not in (".jsonl", ".json", ".csv"):
        from fer_keras.errors import UserError

        raise UserError(f"--out must end in .jsonl or .csv. Received: {out.name}")
    if out.suffix.lower() == ".csv":
        labels = sorted({k for r in records for k in (r.get("scores") or {})})
        unsure = ["unsure"] if any("unsure" in r for r in records) else []  # with predict --min-confidence
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["file", "frame", "face", "box", "landmarks", "label", "score", *unsure, *labels, "error"])
        for r in records:
            scores = r.get("scores") or {}
            writer.writerow([r["file"], r.get("frame", ""), r.get("face"), json.dumps(r.get("box")),
                             json.dumps(r.get("landmarks")), r.get("label", ""), r.get("score", ""),
                             *[r.get(k, "") for k in unsure], *[scores.get(k, "") for k in labels], r.get("error", "")])
        text = buffer.getvalue()
    else:
        text = "".join(json.dumps(r) + "\n" for r in records)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
