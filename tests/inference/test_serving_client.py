"""`fer-keras serve-request` against a loopback server that answers like TF Serving's REST API.

TF Serving itself is not installable here (not on PyPI or Debian), so the server below runs the
real exported SavedModel signature on each request, in TF Serving's columnar JSON format.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MODEL_SIZE, expect_ok, expect_user_error, invoke


def _serve(savedmodel, rows=None):
    """(url, seen requests, stop) of a loopback server running `savedmodel`'s serving_default on every request;
    `rows`: answer only the first `rows` rows (a broken server)."""
    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if not self.path.endswith(":predict") or body.get("signature_name") != "serving_default":
                return self._answer(400, {"error": "bad request"})
            try:
                result = signature(**{name: tf.constant(value, tf.float32) for name, value in body["inputs"].items()})
            except TypeError as e:  # a missing or unknown input, as TF Serving answers it
                return self._answer(400, {"error": str(e)[:200]})
            reply = {"outputs": {"probabilities": result["probabilities"].numpy().tolist()[:rows],
                                 "label_index": result["label_index"].numpy().tolist()[:rows],
                                 "label_name": [n.decode() for n in result["label_name"].numpy()][:rows]}}
            self._answer(200, reply)

        def _answer(self, code, reply):
            data = json.dumps(reply).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1/models/fer:predict", seen, httpd.shutdown


@pytest.fixture(scope="module")
def server(still_savedmodels):
    url, seen, stop = _serve(still_savedmodels["versions"][-1])
    yield url, seen
    stop()


def test_serve_request_matches_local_predict(server, still_run, face_images):
    url, seen = server
    image = sorted(face_images.glob("*.png"))[0]
    remote = expect_ok(invoke("serve-request", url, image, "--size", MODEL_SIZE, "--channels", 1, "--detect", "none"))
    local = expect_ok(invoke("predict", still_run, image, "--detect", "none"))
    remote_record = json.loads(remote.output.strip().splitlines()[-1])
    local_record = json.loads(local.output.strip().splitlines()[-1])
    assert remote_record["label"] == local_record["label"]
    assert remote_record["score"] == pytest.approx(local_record["score"], abs=1e-3)
    assert remote_record["probabilities"] == pytest.approx(list(local_record["scores"].values()), abs=1e-3)
    sent = np.asarray(seen[-1]["inputs"]["images"])
    assert sent.shape == (1, MODEL_SIZE, MODEL_SIZE, 1) and sent.max() > 1.0  # raw pixels, not rescaled


def test_unreachable_server_is_one_clear_error(face_images):
    import socket

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = sorted(face_images.glob("*.png"))[0]
    line = expect_user_error(invoke("serve-request", f"http://127.0.0.1:{port}/v1/models/fer:predict", image,
                                    "--size", MODEL_SIZE, "--detect", "none"))
    assert "Cannot reach the server" in line


def test_serve_request_takes_a_folder_and_records_an_unreadable_image(server, face_images, tmp_path):
    """As predict: a folder is its images, and one unreadable image is its own record (exit 1), not the end of the batch."""
    url, _ = server
    folder = tmp_path / "faces"
    folder.mkdir()
    good = sorted(face_images.glob("*.png"))[:2]
    for image in good:
        (folder / image.name).write_bytes(image.read_bytes())
    (folder / "zz_broken.png").write_bytes(b"not a png")
    result = invoke("serve-request", url, folder, "--size", MODEL_SIZE, "--channels", 1, "--detect", "none")
    line = expect_user_error(result)
    assert line == "Error: 1 of 3 images could not be read; their records say why."
    records = [json.loads(r) for r in result.output.splitlines() if r.startswith("{")]
    assert [r["file"] for r in records] == [str(folder / p.name) for p in good] + [str(folder / "zz_broken.png")]
    assert all("label" in r for r in records[:2]) and "Cannot read image" in records[2]["error"]


def test_a_server_that_answers_fewer_rows_than_faces_is_an_error(still_savedmodels):
    """Faces are paired with the answer's rows: a short answer would silently drop the faces after it."""
    from fer_keras.errors import UserError
    from fer_keras.inference.serving_client import predict_url

    url, _, stop = _serve(still_savedmodels["versions"][-1], rows=1)
    try:
        crops = np.random.default_rng(0).uniform(0, 255, (2, MODEL_SIZE, MODEL_SIZE, 1)).astype(np.float32)
        assert predict_url(url, crops[:1])[0].shape[0] == 1
        with pytest.raises(UserError, match="answered 1 rows of probabilities for 2 faces"):
            predict_url(url, crops)
    finally:
        stop()


def test_landmark_arm_is_served_with_its_landmarks(landmark_arm_run, exports_dir, tmp_path):
    """A landmark_arm export's serving_default takes images and landmarks: --landmarks sends both, as predict feeds them."""
    import skimage.data

    from tests.exports.landmark_exports import landmark_export

    path = landmark_export(landmark_arm_run, exports_dir, "savedmodel", "none")
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    url, seen, stop = _serve(path)
    try:
        line = expect_user_error(invoke("serve-request", url, photo, "--size", MODEL_SIZE))
        assert "answered 400" in line and "landmarks" in line
        remote = expect_ok(invoke("serve-request", url, photo, "--size", MODEL_SIZE, "--landmarks"))
    finally:
        stop()
    local = expect_ok(invoke("predict", path, photo))
    remote_record = json.loads(remote.output.strip().splitlines()[-1])
    local_record = json.loads(local.output.strip().splitlines()[-1])
    assert remote_record["label"] == local_record["label"] and remote_record["box"] == local_record["box"]
    assert remote_record["score"] == pytest.approx(local_record["score"], abs=1e-3)
    assert np.asarray(seen[-1]["inputs"]["landmarks"]).shape == (1, 68, 2)
    assert "--landmarks needs --detect dlib" in invoke("serve-request", url, photo, "--size", MODEL_SIZE, "--landmarks",
                                                       "--detect", "none").output
