"""ConvRNN: runs a convolutional recurrent cell over the time axis of (B, T, H, W, C) sequences."""

import keras


@keras.saving.register_keras_serializable(package="fer_keras")
class ConvRNN(keras.layers.RNN):
    """Runs one convolutional cell over time, as `keras.layers.ConvLSTM2D` runs its cell.

    Works with any cell whose states have a spatial shape and that provides `filters`,
    `state_size` (one entry per state), `get_initial_state(batch_size)` and
    `compute_output_shape(step_shape) -> (output_shape, state_shapes)`:
    `ConvLSTMCell`, `ConvGRUCell`, `EnhancedConvLSTMCell`, `EnhancedConvGRUCell`. The
    cell is one time step; this layer owns the loop (a symbolic `while` loop, or with
    `unroll=True` one copy of the cell per step). It overrides `compute_output_shape`
    so that outputs and states keep their `(H, W, filters)` shape.

    `unroll=True` needs a known T; it is what TFLite export with builtin ops only needs
    (batch 1, fixed T): the `while` loop converts to `TensorList` ops that need a static
    element shape. The batch may stay symbolic otherwise.

    Args:
        cell: a cell instance (or its serialized config), e.g. `ConvLSTMCell(16, 3)`.
        return_sequences: bool, return every step's output `(B, T, H, W, filters)`
            instead of the last `(B, H, W, filters)`.
        return_state: bool, also return the final states (one tensor per state, in the
            cell's state order, e.g. `[h_{T-1}, c_{T-1}, h_{T-2}]` for
            `EnhancedConvLSTMCell`).
        go_backwards: bool, process the sequence in reverse.
        stateful: bool, carry the last states of a batch into the next one.
        unroll: bool, unroll the time loop (needs a known T).
        **kwargs: `keras.layers.RNN` and base `Layer` arguments (`zero_output_for_mask`,
            `name`, `dtype`, ...).

    Call arguments:
        sequences: `(B, T, H, W, C)`.
        initial_state: optional list of initial states, each `(B, H, W, filters)`;
            zeros when omitted.
        mask: optional `(B, T)` boolean mask of the valid steps.
        training: Python bool, passed to the cell.

    Input shape:
        5D `(batch, time, height, width, channels)`, height, width and channels known.

    Output shape:
        `(batch, time, height, width, filters)` with `return_sequences`, else
        `(batch, height, width, filters)`; with `return_state`, followed by one
        `(batch, height, width, filters)` tensor per state.

    Example:

    >>> frames = keras.Input(shape=(8, 16, 16, 4))  # (B, T, H, W, C)
    >>> rnn = ConvRNN(EnhancedConvLSTMCell(8, 3, groups=4), return_state=True)
    >>> h, *states = rnn(frames)
    >>> h.shape, [s.shape for s in states]
    ((None, 16, 16, 8), [(None, 16, 16, 8), (None, 16, 16, 8), (None, 16, 16, 8)])

    References:
        - Keras `keras.layers.ConvLSTM2D` (`keras/src/layers/rnn/conv_lstm.py`), whose
          RNN/cell split and shape handling this follows.
        - Shi et al., "Convolutional LSTM Network", NIPS 2015.
    """

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        **kwargs,
    ):
        if isinstance(cell, dict):
            cell = keras.saving.deserialize_keras_object(cell)
        if isinstance(cell, (list, tuple)):
            raise ValueError(
                "ConvRNN runs one cell; stack ConvRNN layers instead of passing a list. "
                f"Received: cell={cell!r}"
            )
        for attribute in ("filters", "state_size", "get_initial_state"):
            if not hasattr(cell, attribute):
                raise ValueError(
                    f"ConvRNN needs a convolutional cell with `{attribute}` (e.g. ConvLSTMCell). "
                    f"Received: cell={cell!r}"
                )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=5)

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 5:
            raise ValueError(
                "ConvRNN takes sequences of shape (batch, time, height, width, channels). "
                f"Received: sequences_shape={tuple(sequences_shape)}"
            )
        super().build(sequences_shape, initial_state_shape)

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch_size, steps = sequences_shape[0], sequences_shape[1]
        step_shape = (batch_size,) + tuple(sequences_shape[2:])  # (B, H, W, C)
        output_shape, state_shapes = self.cell.compute_output_shape(step_shape)
        if self.return_sequences:
            output_shape = (batch_size, steps) + tuple(output_shape[1:])  # (B, T, H, W, filters)
        if self.return_state:
            return (output_shape, *state_shapes)
        return output_shape

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # keras.layers.RNN.from_config pops "cell" from the caller's dict; work on a copy.
        return super().from_config(dict(config), custom_objects=custom_objects)
