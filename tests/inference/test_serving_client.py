"""`fer-keras serve-request` against a loopback server that answers like TF Serving's REST API.

TF Serving itself is not installable here (not on PyPI or Debian), so the server below runs the
real exported SavedModel signature on each request, in TF Serving's columnar JSON format.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import MODEL_SIZE, expect_ok, expect_user_error, invoke


@pytest.fixture(scope="module")
def server(still_savedmodels):
    signature = tf.saved_model.load(str(still_savedmodels["versions"][-1])).signatures["serving_default"]
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            if not self.path.endswith(":predict") or body.get("signature_name") != "serving_default":
                self.send_response(400)
                self.end_headers()
                self.wfile.write(b'{"error": "bad request"}')
                return
            result = signature(images=tf.constant(body["inputs"]["images"], tf.float32))
            reply = {"outputs": {"probabilities": result["probabilities"].numpy().tolist(),
                                 "label_index": result["label_index"].numpy().tolist(),
                                 "label_name": [n.decode() for n in result["label_name"].numpy()]}}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1/models/fer:predict", seen
    httpd.shutdown()


def test_serve_request_matches_local_predict(server, still_run, face_images):
    url, seen = server
    image = sorted(face_images.glob("*.png"))[0]
    remote = expect_ok(invoke("serve-request", url, image, "--size", MODEL_SIZE, "--channels", 1, "--detect", "none"))
    local = expect_ok(invoke("predict", still_run, image, "--detect", "none"))
    remote_record = json.loads(remote.output.strip().splitlines()[-1])
    local_record = json.loads(local.output.strip().splitlines()[-1])
    assert remote_record["label"] == local_record["label"]
    assert remote_record["score"] == pytest.approx(local_record["score"], abs=1e-3)
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
