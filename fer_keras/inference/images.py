"""Reading image files for prediction, with one clear error for an unreadable file."""

import pathlib

import cv2

from fer_keras.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


def expand_inputs(inputs):
    """Files and folders -> sorted list of image and video files. Raises UserError for a missing path or an empty folder."""
    files = []
    for item in inputs:
        path = pathlib.Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
            if not found:
                raise UserError(f"Folder {str(path)!r} holds no images or videos ({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))}).")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"Input {str(path)!r} does not exist.")
    return files


def read_rgb(path):
    """uint8 RGB (H, W, 3); raises UserError when the file is not a readable image."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"Cannot read image {str(path)!r}: not an image or corrupt.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def frame_sequences(inputs):
    """The folders among `inputs` that hold a sequence's frames, for video models: [(name, folder, frames)].

    Every folder at or under an input folder that directly holds image files is one sequence
    (CK+'s ``cohn-kanade-images/S005/001/``), its frames in the order of the numbers in their
    names. `name` is the folder's path from the input folder's parent (``cohn-kanade-images/S005/001``).
    """
    from fer_keras.names import natural_key

    found = []
    for item in inputs:
        path = pathlib.Path(item)
        if not path.is_dir():
            continue
        for folder in sorted([path, *(p for p in path.rglob("*") if p.is_dir())]):
            frames = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                            key=lambda p: natural_key(p.name))
            if frames:
                found.append((str(folder.relative_to(path.parent)), folder, frames))
    return found

