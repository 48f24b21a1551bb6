"""Models by name: `@register_model`, `get_model`, `list_models` (as timm's create_model).

A builder is `fn(input_shape, num_classes, **size_args) -> keras.Model`. Each registered model
declares its input `kind` ("still": (H, W, C) images; "clip": (T, H, W, C) frame clips) and
named sizes ("small", "paper" ...): plain dicts of builder arguments. Every model takes raw
pixels in [0, 255] and ends in a softmax output named "probabilities".
"""

import dataclasses
import importlib

from fer_keras.errors import UserError

KINDS = ("still", "clip")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: object
    kind: str
    sizes: dict
    description: str
    family: str
    optimizer: str = "adam"
    trainer: str = None
    evaluator: str = None


_REGISTRY = {}
# Modules whose import registers models; imported lazily so `fer-keras --help` stays fast.
_MODULES = (
    "fer_keras.models.baselines",
    "fer_keras.models.convrnn",  # paper 000
    "fer_keras.models.ram",  # paper 001
    "fer_keras.models.sae",  # paper 002
    "fer_keras.models.arm",  # paper 003
    "fer_keras.models.landmark_arm",  # paper 003
    "fer_keras.models.vae_swap",  # paper 004
)


def register_model(name, *, kind, sizes, description, family="baseline", optimizer="adam", trainer=None, evaluator=None):
    """Registers the decorated builder under `name`.

    `optimizer` ("adam" or "adabelief") is what `fer-keras train` compiles the model with. A
    built model may define `pretrain(train_ds, epochs, verbose)`, which training runs before
    `fit` (greedy layer-wise pretraining, frozen-branch stages ...).

    Models that are not classifiers trained by one compile + fit (e.g. `vae_swap`'s iterated
    stages) name their own `trainer` and `evaluator` as "module:function" strings:
    `trainer(config=, manifest=, split=, run_dir=, quiet=, resume=)` writes ``run_dir/model.keras``;
    `evaluator(run_dir=, config=, manifest=, split=, model=, quiet=)` returns the metrics dict for metrics.json
    (`model`: the run's model, already loaded by `fit.load_run`).
    """
    if optimizer not in ("adam", "adabelief"):
        raise ValueError(f"optimizer must be 'adam' or 'adabelief'. Received: {optimizer!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}. Received: kind={kind!r}")
    if "small" not in sizes:
        raise ValueError(f"Model {name!r} must define a 'small' size. Received sizes: {sorted(sizes)}")

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is registered twice.")
        _REGISTRY[name] = ModelSpec(name, builder, kind, dict(sizes), description, family, optimizer, trainer, evaluator)
        return builder

    return decorate


def _load():
    for module in _MODULES:
        importlib.import_module(module)


def list_models():
    _load()
    return sorted(_REGISTRY)


def get_spec(name):
    _load()
    if name not in _REGISTRY:
        raise UserError(f"Unknown model {name!r}. Available: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def builder_takes(name, argument):
    """Whether model `name`'s builder takes `argument` ("streams", "unroll", "rgb_run", "num_landmarks")."""
    import inspect

    return argument in inspect.signature(get_spec(name).builder).parameters


def resolve_hook(path):
    """"package.module:function" -> the function."""
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def get_model(name, input_shape, num_classes, size="small", **overrides):
    """Builds model `name` at named `size`, with builder arguments overridden by `overrides`."""
    spec = get_spec(name)
    if size not in spec.sizes:
        raise UserError(f"Model {name!r} has no size {size!r}. Sizes: {', '.join(sorted(spec.sizes))}.")
    args = dict(spec.sizes[size], **overrides)
    return spec.builder(tuple(input_shape), num_classes, **args)
