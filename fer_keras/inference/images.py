"""Reading image files for prediction, with one clear error for an unreadable file."""

import pathlib

import cv2

from fer_keras.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".3gp", ".wmv", ".flv", ".ts", ".mts", ".m2ts"}


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
    """uint8 RGB (H, W, 3), upright by its EXIF orientation; raises UserError when the file is not a readable image.

    Read as `prepare` reads images (`data_prep.common.read_image`, Pillow): cv2.imread decodes a
    truncated JPEG without complaint, and the face in its grey lower part would be scored as a face.
    """
    from fer_keras.data_prep.common import Skip, read_image

    try:
        image = read_image(path)
    except Skip as e:
        reason = "not an image, or corrupt or truncated" if "corrupt" in str(e) else str(e)
        raise UserError(f"Cannot read image {str(path)!r}: {reason}.") from None
    return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.shape[-1] == 1 else image


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

