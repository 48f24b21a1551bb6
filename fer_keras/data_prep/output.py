"""Write a whole output folder under a temporary name and rename it when complete."""

import contextlib
import os
import pathlib
import shutil

from fer_keras.errors import UserError


@contextlib.contextmanager
def staged_output(out, *, overwrite=False):
    """Yields ``<out>.partial``; renames it to `out` on success, deletes it on any error.

    Refuses to replace a non-empty `out` unless `overwrite`.
    """
    out = pathlib.Path(out)
    if out.is_symlink():  # a link to the folder to fill: filled where it points, the link kept
        out = out.resolve()
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"Output folder {str(out)!r} already exists and is not empty.")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
