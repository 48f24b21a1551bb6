"""benchmarks/video_speed.py runs under another Keras backend: the video models must not need TensorFlow."""
import ast
import pathlib
import subprocess
import sys

import keras

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.video_speed import device, only_video_models  # noqa: E402


def module_imports(path):
    """The dotted names `path` imports at module level (imports inside functions are left out)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def reachable_fer_keras_modules(start):
    """Every fer_keras module imported at module level from `start`, their packages' __init__ files included."""
    seen, todo = set(), list(start)
    while todo:
        name = todo.pop()
        if name in seen or not name.startswith("fer_keras"):
            continue
        seen.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            todo.append(".".join(parts[:i]))
        path = ROOT.joinpath(*parts)
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if path.exists():
            todo.extend(module_imports(path))
    return seen


def test_the_video_model_modules_import_no_tensorflow_at_module_level():
    only_video_models_modules = ("fer_keras.models.convrnn", "fer_keras.models.ram", "fer_keras.models.registry")
    modules = reachable_fer_keras_modules(only_video_models_modules)
    assert "fer_keras.layers.enhanced_conv_lstm_cell" in modules and "fer_keras.layers.recurrent_attention" in modules
    offenders = []
    for name in sorted(modules):
        path = ROOT.joinpath(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        if path.exists() and any(n == "tensorflow" or n.startswith("tensorflow.") for n in module_imports(path)):
            offenders.append(name)
    assert offenders == []


def test_the_import_check_sees_a_module_that_imports_tensorflow():
    assert "tensorflow" in module_imports(ROOT / "fer_keras" / "models" / "sae.py")


def test_only_video_models_registers_the_video_models_alone():
    code = ("import sys; from benchmarks.video_speed import only_video_models; only_video_models(); "
            "from fer_keras.models.registry import list_models; print(','.join(list_models())); "
            "print(sorted(m for m in sys.modules if m.startswith('fer_keras.models.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names, modules = result.stdout.strip().splitlines()[-2:]
    assert set(names.split(",")) == {"convlstm", "convgru", "econvlstm", "econvgru", "convlstm_ram", "econvlstm_ram"}
    assert "fer_keras.models.sae" not in modules and "fer_keras.models.vae_swap" not in modules


def test_device_names_the_backend_and_this_cpu():
    where = device()
    assert f"Keras {keras.__version__}" in where and keras.backend.backend() in where.lower()
    assert where.endswith("CPU")
