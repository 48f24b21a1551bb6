"""Dense optical flow between consecutive frames (OpenCV Farneback), for the flow stream."""

import cv2
import numpy as np


def _grey(frame):
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[-1] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return frame.reshape(frame.shape[:2])


def sequence_flow(frames):
    """uint8 (T, H, W, C) frames -> float32 (T, H, W, 2) flow; flow[t] maps frame t-1 to t, flow[0] = 0.

    Farneback parameters follow OpenCV's tutorial defaults (pyramid 0.5, 3 levels, window 15),
    which suit face crops of 48-224 px.
    """
    frames = np.asarray(frames)
    flows = np.zeros(frames.shape[:3] + (2,), np.float32)
    previous = _grey(frames[0])
    for t in range(1, len(frames)):
        current = _grey(frames[t])
        flows[t] = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        previous = current
    return flows
