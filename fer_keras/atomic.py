"""Write a file under a temporary name and rename it when complete: readers never see half a file.

A failed write (a full disk, say) removes the temporary file and leaves any previous version of
the target untouched; ENOSPC becomes a one-line `UserError`.
"""

import errno
import os
import pathlib

from fer_keras.errors import UserError


def nearest_folder(path, option, shown=None):
    """The nearest existing folder above `path`; a UserError naming `option` (and `shown`, the path as the user gave it,
    where that differs) when it is a file, so nothing can be written below it."""
    for parent in pathlib.Path(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {shown or str(path)!r} cannot be written: {str(parent)!r} is a file, not a folder.")
            return parent
    return pathlib.Path(".")


def check_writable(folder, option):
    """A UserError naming `option` unless files can be created in `folder` (or, where it does not exist yet, in the
    nearest folder above it): checked before long work, which would otherwise fail only at its end."""
    import tempfile

    given = str(folder)
    for link in (pathlib.Path(folder), *pathlib.Path(folder).parents):  # a broken link would stop mkdir(parents=True)
        if link.is_symlink() and not link.exists():
            raise UserError(f"{option} {given!r} cannot be written: {str(link)!r} is a link to {os.readlink(link)!r}, "
                            "which does not exist.")
    # realpath settles '..' as the kernel will once the folders above exist: 'new/../a_file' is a_file.
    folder = pathlib.Path(os.path.realpath(folder))
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {given!r} cannot be written: it is a file, not a folder.")
    existing = folder if folder.is_dir() else nearest_folder(folder, option, given)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UserError(f"{option} {given!r} cannot be written: {e.strerror} in {str(existing)!r}.") from None


def _write_tmp(path, data):
    """`data` into `path`.tmp, synced; the temporary file is removed if that fails (ENOSPC: a UserError)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise UserError(f"No space left on device while writing {path}; nothing was written.") from None
        raise
    return tmp


def write_bytes(path, data):
    path = pathlib.Path(path)
    os.replace(_write_tmp(path, data), path)
    return path


def write_text(path, text):
    return write_bytes(path, text.encode())


def write_files(pairs):
    """Writes several (path, bytes) files together: all under temporary names first, then each renamed. If any
    write fails, none of the targets has changed (previous versions stay, with their companions)."""
    tmps = []
    try:
        for path, data in pairs:
            tmps.append(_write_tmp(path, data))
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    written = []
    for tmp, (path, _) in zip(tmps, pairs):
        os.replace(tmp, path)
        written.append(pathlib.Path(path))
    return written
