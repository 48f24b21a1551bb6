"""The additions paper 001 eq. (2) makes to a ConvRNN cell, shared by the two Enhanced cells.

`TemporalGates` is a mixin for a cell that already has `filters`, `kernel_size`, `input_dim`,
`spatial_dims`, `use_bias`, the initializers/regularizers and `_conv` (ConvLSTMCell,
ConvGRUCell). It adds:

* temporal modulation and skip gates reading h(t-2):
  s~_t = tanh(W_xs~ * x_t + W_hs~ * h_{t-2} + b_s~), s_t = sigmoid(W_xs * x_t + W_hs * h_{t-2} + b_s);
* the spatial skip W_xr * x_t (no bias);
* GroupNorm on the sum the cell forms with them.
"""

import keras
from keras import ops

from fer_keras.layers.conv_cell import _is_positive_int, _pair


class TemporalGates:
    """Mixin: temporal gates on h(t-2), spatial skip and GroupNorm (paper 001 eq. 2)."""

    def _init_temporal_gates(self, filters, groups, skip_kernel_size, norm_epsilon):
        if not _is_positive_int(groups) or filters % groups:
            raise ValueError(
                f"groups must be an int >= 1 that divides filters={filters}. Received: groups={groups!r}"
            )
        if not norm_epsilon > 0:
            raise ValueError(f"norm_epsilon must be > 0. Received: norm_epsilon={norm_epsilon!r}")
        self.groups = groups
        self.skip_kernel_size = _pair(skip_kernel_size, "skip_kernel_size")
        self.norm_epsilon = norm_epsilon
        self.group_norm = keras.layers.GroupNormalization(
            groups=groups, epsilon=norm_epsilon, dtype=self.dtype_policy, name="group_norm"
        )

    def _build_temporal_gates(self):
        """Weights, created after the base cell's: temporal kernels (s~, s), bias, skip kernel, GroupNorm."""
        f = self.filters
        self.temporal_kernel = self.add_weight(
            shape=self.kernel_size + (self.input_dim, 2 * f),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="temporal_kernel",
        )
        self.temporal_recurrent_kernel = self.add_weight(
            shape=self.kernel_size + (f, 2 * f),
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            name="temporal_recurrent_kernel",
        )
        if self.use_bias:
            self.temporal_bias = self.add_weight(
                shape=(2 * f,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                name="temporal_bias",
            )
        else:
            self.temporal_bias = None
        self.skip_kernel = self.add_weight(
            shape=self.skip_kernel_size + (self.input_dim, f),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="skip_kernel",
        )
        self.group_norm.build((None,) + self.spatial_dims + (f,))

    def _enhance(self, cell_out, inputs, h_prev2, training=False):
        """GroupNorm(cell_out + s_t ∘ s~_t + W_xr * x_t): the enhanced cell's h_t."""
        z = self._conv(inputs, self.temporal_kernel, self.temporal_bias) + self._conv(
            h_prev2, self.temporal_recurrent_kernel
        )
        z_mod, z_skip = ops.split(z, 2, axis=-1)  # 2 x (B, H, W, filters)
        temporal = ops.sigmoid(z_skip) * ops.tanh(z_mod)  # s_t ∘ s~_t
        spatial = self._conv(inputs, self.skip_kernel)  # W_xr * x_t
        total = cell_out + temporal + spatial
        return self._group_norm_one_pass(total) if training else self.group_norm(total)

    def _group_norm_one_pass(self, x):
        """`self.group_norm(x)` with both moments from one pass over x (E[x], E[x²]), for training.

        The same function as Keras's GroupNormalization (same gamma, beta, epsilon; outputs agree
        to float32 rounding, tested), with fewer ops to differentiate: about 10 % of the Enhanced
        cell's train-step time (benchmarks/video_speed.py). Inference and export keep Keras's
        two-pass layer, whose int8 TFLite form does not square activations.
        """
        dtype = x.dtype
        height, width, channels = x.shape[1:]
        groups = self.groups
        grouped = ops.reshape(ops.cast(x, "float32"), (-1, height * width, groups, channels // groups))
        mean = ops.mean(grouped, axis=(1, 3), keepdims=True)
        variance = ops.maximum(ops.mean(ops.square(grouped), axis=(1, 3), keepdims=True) - ops.square(mean), 0.0)
        shape = (1, 1, groups, channels // groups)
        scale = ops.rsqrt(variance + self.norm_epsilon) * ops.reshape(ops.cast(self.group_norm.gamma, "float32"), shape)
        shift = ops.reshape(ops.cast(self.group_norm.beta, "float32"), shape) - mean * scale
        return ops.cast(ops.reshape(grouped * scale + shift, (-1, height, width, channels)), dtype)

    def _temporal_gates_config(self):
        return {"groups": self.groups, "skip_kernel_size": self.skip_kernel_size, "norm_epsilon": self.norm_epsilon}
