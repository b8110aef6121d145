"""Layering (issue 13): model files use Tensor ops only; they never reach for gmcore.backend
(device and array-library choices stay in the engine, so every model runs on every device)."""
import ast
from pathlib import Path

import gmcore

MODELS = Path(gmcore.__file__).parent / "models"


def _backend_uses(path):
    tree = ast.parse(path.read_text())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (
                (node.module or "").endswith("backend") or any(a.name == "backend" for a in node.names)):
            hits.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.endswith(".backend") for a in node.names):
            hits.append(node.lineno)
    return hits


# Array-level inference kernels that live beside their models, each with why: they ask the
# engine for the array library of the model's own device (backend.xp_for, device_context) and
# choose nothing themselves, so they run wherever the model does. Nothing else may join lightly.
ARRAY_KERNELS = {
    # cached-activation pixel sampling: one position per layer per pixel, on raw arrays because
    # the autograd engine's per-op overhead is what it removes (tests: identical draws to the
    # Tensor-op sampler)
    "autoregressive/_fast_sampling.py",
}


def test_model_files_do_not_import_backend():
    found = {str(p.relative_to(MODELS)): _backend_uses(p) for p in sorted(MODELS.rglob("*.py"))}
    assert {k: v for k, v in found.items() if v and k not in ARRAY_KERNELS} == {}
    assert all(found.get(k) for k in ARRAY_KERNELS), "an exempted file no longer needs its exemption"
