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


def test_model_files_do_not_import_backend():
    found = {str(p.relative_to(MODELS)): _backend_uses(p) for p in sorted(MODELS.rglob("*.py"))}
    assert {k: v for k, v in found.items() if v} == {}
