"""Shared by the benchmark scripts: write a JSON result and one section of docs/benchmarks.md.

Each script owns one section, delimited by HTML comments, so scripts can run in any order and
re-running one replaces only its own table.
"""

import json
import pathlib
import platform
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts in `benchmarks/`; each section names its script, dataset and machine.\n"
    "Numbers on SynthFER are numbers on SynthFER, not on CK+, RAF-DB or any real dataset.\n"
)


def machine():
    """A short description of where the numbers were taken."""
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_json(name, data):
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = dict(data, written=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine())
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    return path


def write_section(name, markdown):
    """Replaces (or appends) the section `name` of docs/benchmarks.md with `markdown`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else HEADER
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    return DOC
