"""Reading the JSON files fer-keras writes or takes (configs, manifests, export metadata).

A damaged or hand-edited file is the user's to fix, so it is one `UserError` line naming the file.
"""

import json
import pathlib

from fer_keras.errors import UserError


def read_json_object(path, what=""):
    """The JSON object in `path`; `what` (e.g. "Config file ") starts the error line before the path."""
    path = pathlib.Path(path)
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what}{path} is not valid JSON ({e}).") from None
    if not isinstance(value, dict):
        raise UserError(f"{what}{path} must hold a JSON object. Received: {type(value).__name__}")
    return value
