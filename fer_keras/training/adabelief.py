"""AdaBelief optimizer (Zhuang et al., NeurIPS 2020) for Keras 3."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="fer_keras")
class AdaBelief(keras.optimizers.Optimizer):
    """AdaBelief: Adam whose second moment is the EMA of `(g - m)^2`, the "belief".

    For each variable `theta` with gradient `g_t` at step `t` (Zhuang et al. 2020,
    Algorithm 2, with decoupled weight decay):

        theta <- theta - lr * wd * theta                  (decoupled weight decay)
        m_t = beta_1 * m_{t-1} + (1 - beta_1) * g_t
        s_t = beta_2 * s_{t-1} + (1 - beta_2) * (g_t - m_t)^2 + epsilon
        m_hat = m_t / (1 - beta_1^t),   s_hat = s_t / (1 - beta_2^t)
        theta <- theta - lr * m_hat / (sqrt(s_hat) + epsilon)

    The defaults are paper 003's Table 4: lr 1e-3, betas (0.9, 0.999), epsilon 1e-16,
    decoupled weight decay 1e-2, no rectification. This matches `adabelief-pytorch`
    0.2.0 (the version paper 003 used) with `weight_decouple=True, fixed_decay=False,
    rectify=False, amsgrad=False`: that code also adds `epsilon` into the stored `s_t`
    and again to the denominator, and scales the decay by the learning rate. The decay
    is the base Keras optimizer's `weight_decay` mechanism, applied (as in the PyTorch
    code) before the update and to every variable not excluded with
    `exclude_from_weight_decay`. Rectification (RAdam-style) and AMSGrad are not
    implemented.

    Args:
        learning_rate: float, a `keras.optimizers.schedules.LearningRateSchedule`, or a
            callable; default 1e-3. Paper 003 decays it with PyTorch's
            `ExponentialLR(gamma=0.9)` once per epoch.
        beta_1: float in [0, 1), decay of the first moment; default 0.9.
        beta_2: float in [0, 1), decay of the belief `s`; default 0.999.
        epsilon: float >= 0, added to `s_t` and to the denominator; default 1e-16.
        weight_decay: float >= 0 or None, decoupled weight decay; default 1e-2.
        name: optimizer name.
        **kwargs: other base optimizer arguments (`clipnorm`, `clipvalue`,
            `global_clipnorm`, `use_ema`, `ema_momentum`, `loss_scale_factor`,
            `gradient_accumulation_steps`, ...).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7)])
    >>> model.compile(optimizer=AdaBelief(), loss="sparse_categorical_crossentropy")

    References:
        - Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
          Observed Gradients", NeurIPS 2020, Algorithm 2 (bias-corrected AdaBelief).
        - Loshchilov and Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
        - Paper 003 (Kanamori et al.), sec. 5.1, Table 4 (hyperparameters).
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-16,
        weight_decay=1e-2,
        name="adabelief",
        **kwargs,
    ):
        for arg_name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{arg_name} must be in [0, 1). Received: {arg_name}={value}")
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0. Received: epsilon={epsilon}")
        if weight_decay is not None and weight_decay < 0:
            raise ValueError(
                f"weight_decay must be >= 0 or None. Received: weight_decay={weight_decay}"
            )
        if isinstance(learning_rate, (int, float)) and learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0. Received: learning_rate={learning_rate}")
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs
        )
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._beliefs = self.add_optimizer_variables(
            var_list, ["momentum", "belief"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1 = ops.cast(self.beta_1, dtype)
        beta_2 = ops.cast(self.beta_2, dtype)
        epsilon = ops.cast(self.epsilon, dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        s = self._beliefs[index]

        self.assign(m, beta_1 * m + (1.0 - beta_1) * gradient)
        residual = gradient - m
        self.assign(s, beta_2 * s + (1.0 - beta_2) * ops.square(residual) + epsilon)
        m_hat = m / (1.0 - ops.power(beta_1, step))
        s_hat = s / (1.0 - ops.power(beta_2, step))
        self.assign_sub(variable, lr * m_hat / (ops.sqrt(s_hat) + epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        )
        return config
