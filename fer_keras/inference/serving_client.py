"""A client for a TF Serving REST endpoint serving a fer-keras SavedModel export.

Faces are detected and aligned here exactly as `fer-keras predict` does it; the request uses
TF Serving's columnar format::

    POST {url}  {"signature_name": "serving_default", "inputs": {"images": [[[[p], ...]]]}}

and the reply ``{"outputs": {"probabilities": [[...]], "label_index": [...], "label_name": [...]}}``
is turned back into one record per face.
"""

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from fer_keras.errors import UserError


def request_body(batch, input_name="images", landmarks=None):
    """The JSON body for a float batch (N, H, W, C) of raw pixels; `landmarks` (N, 68, 2), crop pixels, for
    landmark_arm exports, whose serving_default also takes them."""
    inputs = {input_name: np.asarray(batch, np.float32).round(2).tolist()}
    if landmarks is not None:
        inputs["landmarks"] = np.asarray(landmarks, np.float32).round(3).tolist()
    return json.dumps({"signature_name": "serving_default", "inputs": inputs})


def check_url(url):
    """UserError unless `url` is an http:// or https:// URL with a host (urllib would say "unknown url type")."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise UserError(f"URL must start with http:// or https:// and name a host, e.g. "
                        f"http://localhost:8501/v1/models/fer:predict. Received: {url!r}")


def post(url, body, timeout=30.0):
    check_url(url)
    request = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # the user's own server
            data = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")[:300]
        raise UserError(f"The server at {url} answered {e.code}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise UserError(f"Cannot reach the server at {url}: {getattr(e, 'reason', e)}") from None
    except http.client.InvalidURL as e:  # e.g. a port that is not a number
        raise UserError(f"Bad URL {url!r}: {e}") from None
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"The server at {url} did not answer JSON: {data[:200]!r}") from None


def predict_url(url, crops, input_name="images", landmarks=None):
    """Probabilities (N, K) and label names from the server for aligned crops (N, H, W, C): one row per crop, or
    a UserError."""
    reply = post(url, request_body(crops, input_name, landmarks))
    outputs = reply.get("outputs") if isinstance(reply, dict) else None
    if not isinstance(outputs, dict) or "probabilities" not in outputs:
        raise UserError(f"The server at {url} did not return a fer-keras signature's outputs: {str(reply)[:200]}")
    probabilities, names = np.asarray(outputs["probabilities"], np.float32), list(outputs.get("label_name", []))
    if probabilities.ndim != 2 or len(probabilities) != len(crops) or (names and len(names) != len(crops)):
        raise UserError(f"The server at {url} answered {len(probabilities)} rows of probabilities for {len(crops)} faces.")
    return probabilities, names
