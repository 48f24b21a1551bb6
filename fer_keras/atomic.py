"""Write a file under a temporary name and rename it when complete: readers never see half a file.

A failed write (a full disk, say) removes the temporary file and leaves any previous version of
the target untouched; ENOSPC becomes a one-line `UserError`.
"""

import errno
import os
import pathlib

from fer_keras.errors import UserError


def nearest_folder(path, option):
    """The nearest existing folder above `path`; a UserError naming `option` when it is a file, so nothing can be written below it."""
    for parent in pathlib.Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder.")
            return parent
    return pathlib.Path(".")


def write_bytes(path, data):
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"No space left on device while writing {path}; nothing was written.") from None
        raise
    return path


def write_text(path, text):
    return write_bytes(path, text.encode())


def write_files(pairs):
    """Writes several (path, bytes) files; if any fails, the ones this call wrote are removed."""
    written = []
    try:
        for path, data in pairs:
            written.append(write_bytes(path, data))
    except BaseException:
        for path in written:
            pathlib.Path(path).unlink(missing_ok=True)
        raise
    return written
