"""Progress bars (tqdm) that go quiet with --quiet or when output is not a terminal."""

import sys

from tqdm.auto import tqdm


def progress(total=None, desc=None, unit="it", quiet=False):
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
