"""Loads dlib's detector and 68-point model on import.

The worker pool of `fer_keras.data_prep.common` has its forkserver import this module once, so
that every worker forked from it shares one copy of the models (about 100 MB, a few seconds to
load) instead of loading its own. A failure here is left for the workers to report.
"""

from fer_keras.data_prep import faces

try:
    faces._dlib_models()
except Exception:  # noqa: BLE001 - e.g. the model file is missing: each worker raises it itself
    pass
