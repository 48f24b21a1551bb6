"""Keeps what native (C++) code prints on stderr away from the user, unless something fails.

TensorFlow 2.21, its TFLite converter and LiteRT write lines such as "All log messages before
absl::InitializeLog() ...", "fully_quantize: 0, inference_type: 6 ..." and "INFO: Created TensorFlow
Lite XNNPACK delegate for CPU." straight to file descriptor 2, past TF_CPP_MIN_LOG_LEVEL and Python's
logging; only redirecting the descriptor keeps them off a user's terminal.
"""

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def native_stderr_captured(replay_on_error=True):
    """Sends everything written to file descriptor 2 inside the block to a temporary file.

    Python's own stderr goes there too for the duration, so keep the block to the native call. If the
    block raises, what was captured is written to stderr before the exception propagates, unless
    `replay_on_error` is False (the caller turns the failure into its own one-line message).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except Exception:  # not Ctrl-C: the user stopped it, and TensorFlow's start-up lines are not an error
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed and replay_on_error:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
