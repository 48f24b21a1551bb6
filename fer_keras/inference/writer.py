"""Prediction records to JSON lines (default, and stdout) or CSV, written as they come.

`RecordWriter` writes each record when it is handed one: to stdout at once (a live webcam, or
``fer-keras predict ... | head``, shows it straight away), to a file under a temporary name that
becomes ``--out`` only when the command finishes, so that a failed or interrupted run leaves
no half-written file.
"""

import csv
import json
import os
import pathlib
import sys

from fer_keras import atomic
from fer_keras.errors import UserError

SUFFIXES = (".jsonl", ".csv")
# CSV columns before the per-label scores; the optional ones are there when the records can have them.
BASE_COLUMNS = ("file", "frame", "face", "box", "landmarks", "label", "score")


def check_out(out):
    """A UserError, before any work, when records cannot be written to `out` (None: stdout)."""
    if out is None:
        return
    path = pathlib.Path(out)
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(f"--out must end in .jsonl (JSON lines) or .csv. Received: {path.name}")
    if path.is_dir():
        raise UserError(f"--out {str(path)!r} is a folder; give a .jsonl or .csv file name.")
    parent = atomic.nearest_folder(path, "--out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {str(path)!r} cannot be written: no permission to write in {str(parent)!r}.")


class RecordWriter:
    """Context manager: ``write(record)`` for each record; the file is complete when the block ends without error.

    Args:
        out: a .jsonl or .csv path, or None for JSON lines on stdout.
        labels: the model's label names (the CSV's score columns).
        optional: CSV columns some records carry ("frame_file", "window_frame", "unsure").
    """

    def __init__(self, out=None, *, labels=(), optional=()):
        check_out(out)
        self.out = None if out is None else pathlib.Path(out)
        self.labels = list(labels)
        self.optional = [c for c in ("frame_file", "window_frame", "unsure") if c in optional]
        self.count = 0
        self._file = self._csv = self._tmp = None

    def __enter__(self):
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = self.out.with_name(self.out.name + ".tmp")
            self._file = open(self._tmp, "w", newline="")
            if self.out.suffix.lower() == ".csv":
                self._csv = csv.writer(self._file)
                self._csv.writerow([*BASE_COLUMNS, *self.optional, *self.labels, "error"])
        return self

    def write(self, record):
        self.count += 1
        if self._csv is not None:
            scores = record.get("scores") or {}
            self._csv.writerow([
                record["file"], record.get("frame", ""), record.get("face"), json.dumps(record.get("box")),
                json.dumps(record.get("landmarks")), record.get("label", ""), record.get("score", ""),
                *[record.get(c, "") for c in self.optional], *[scores.get(k, "") for k in self.labels],
                record.get("error", "")])
        elif self._file is not None:
            self._file.write(json.dumps(record) + "\n")
        else:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()

    def __exit__(self, kind, error, traceback):
        if self._file is None:
            return False
        self._file.close()
        if kind is None:
            try:
                os.replace(self._tmp, self.out)
                return False
            except OSError as e:
                self._tmp.unlink(missing_ok=True)
                raise UserError(f"Cannot write --out {str(self.out)!r}: {e.strerror}.") from None
        self._tmp.unlink(missing_ok=True)
        return False

