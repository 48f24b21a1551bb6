"""File-name helpers shared by the commands that name outputs after inputs, or read numbered frames."""

import re


def safe_name(text, default):
    """`text` with every run of characters outside [A-Za-z0-9_.-] made one "_", or `default` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or default


def natural_key(name):
    """Sort key that compares the numbers in a name as numbers: frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def printable(text):
    """`text` as valid UTF-8 text: the bytes of a file name that is not UTF-8 (which Python reads as lone surrogates,
    e.g. Latin-1 "café" from an old camera) written as \\xNN escapes."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
