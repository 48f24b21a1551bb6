"""The optical-flow input of a two-stream model, made frame by frame from the aligned crops."""

import numpy as np

from fer_keras.data.records import DEFAULT_FLOW_BOUND
from fer_keras.data_prep.flow import sequence_flow


class FlowStream:
    """Flow of each aligned face crop from the crop before it, as two-stream models take it.

    The flow is the one `fer_keras.data_prep.flow.sequence_flow` computes for training (Farneback
    on the crops made grey, pixels per frame, x then y), clipped to +-`bound`, the range the
    stored training flow covers (`fer_keras.exports.describe.flow_input`). A crop with no crop
    before it, the first ever or the first after `reset()`, gets zeros: predict resets after a
    frame without a face. A clip window or a recurrent stream that starts later keeps the flow
    from the crop before it, as training's clips do (`pipeline.clip_dataset` slices a sequence's
    flow, whose first frame alone is zeros).

    Args:
        bound: flow is clipped to +-bound pixels per frame.

    Call arguments:
        crop: (S, S, C) aligned crop, raw pixels 0..255 (uint8 or float holding whole values).

    Returns:
        float32 (S, S, 2) flow from the previous crop to `crop`.

    Example:

    >>> flows = FlowStream()
    >>> flows(crop_0)        # zeros
    >>> flows(crop_1)        # sequence_flow([crop_0, crop_1])[1], clipped
    >>> flows.reset()        # the next crop starts again from zeros
    """

    def __init__(self, bound=DEFAULT_FLOW_BOUND):
        if not bound or bound <= 0:
            raise ValueError(f"bound must be > 0. Received: bound={bound}")
        self.bound = float(bound)
        self.reset()

    def reset(self):
        """The next crop has no crop before it: its flow is zeros."""
        self.previous = None

    def __call__(self, crop):
        # Crops reach the model as float32 copies of uint8 pixels; Farneback reads them as uint8, as in data_prep.
        current = np.clip(np.rint(np.asarray(crop, np.float32)), 0, 255).astype(np.uint8)
        if self.previous is None or self.previous.shape != current.shape:
            flow = np.zeros(current.shape[:2] + (2,), np.float32)  # (S, S, 2)
        else:
            flow = np.clip(sequence_flow(np.stack([self.previous, current]))[1], -self.bound, self.bound)
        self.previous = current
        return flow
