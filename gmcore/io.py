"""Saving and loading: tensors in safetensors, everything else in a JSON sidecar; never pickle.

Two levels:

* :func:`save` / :func:`load` write and read a flat ``{name: Tensor}`` mapping (a ``state_dict``)
  as one ``.safetensors`` file.
* :func:`save_checkpoint` / :func:`load_checkpoint` write a training state of any nesting
  (model and optimizer ``state_dict``, scheduler, EMA, RNG and data-loader positions, config,
  step) as a pair ``NAME.safetensors`` (every array) + ``NAME.json`` (the structure, with each
  array replaced by a reference to its key, and the SHA-256 of the weights file).

Writes are atomic: each file goes to a temporary file in the same folder, is flushed and
fsync'ed, then renamed over the target, and the folder is fsync'ed. The JSON is renamed last
and names the digest of the weights it belongs to, so a crash between the two renames is
detected on load (the old JSON no longer matches the new weights) instead of silently mixing
two checkpoints. Loading parses safetensors' header and raw bytes (no code runs).

>>> import gmcore as gm, tempfile, os
>>> d = tempfile.mkdtemp()
>>> gm.save({"w": gm.ones(2, 3)}, os.path.join(d, "w.safetensors"))
>>> gm.load(os.path.join(d, "w.safetensors"))["w"].shape
gmcore.Size([2, 3])
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "atomic_write_bytes",
           "atomic_write_text", "CheckpointError"]

FORMAT = "gmcore-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, or does not match its sidecar."""


def _safetensors():
    try:
        import safetensors.numpy as stn
    except ImportError as exc:
        raise ImportError("saving and loading weights needs the 'safetensors' package: "
                          "pip install 'gmcore[train]'") from exc
    return stn


# ---- atomic files -----------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # includes KeyboardInterrupt: never leave the temporary behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ---- flat tensor files --------------------------------------------------------------------------

def _host_array(value, name: str) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.data
    if not isinstance(value, np.ndarray):
        cp = backend.cupy_or_none()
        if cp is not None and isinstance(value, cp.ndarray):
            value = cp.asnumpy(value)
        else:
            raise TypeError(f"cannot save {name!r}: expected a Tensor or array, got {type(value).__name__}")
    # (np.ascontiguousarray would turn a 0-d array into shape (1,))
    return value if value.flags.c_contiguous else value.copy(order="C")


def _serialize(tensors: Mapping[str, Any], metadata: dict[str, str] | None) -> bytes:
    stn = _safetensors()
    arrays = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"tensor names must be strings, got {k!r}")
        arrays[k] = _host_array(v, k)
    return stn.save(arrays, metadata=metadata)


def save(tensors: Mapping[str, Any], path) -> None:
    """Write a ``{name: Tensor or array}`` mapping to a safetensors file, atomically.

    CUDA tensors are copied to the host; on load they come back on the CPU (move them with
    ``module.load_state_dict`` or ``.to``).
    """
    if not hasattr(tensors, "items"):
        raise TypeError(f"gmcore.save expects a mapping of names to tensors (e.g. model.state_dict()), "
                        f"got {type(tensors).__name__}")
    atomic_write_bytes(path, _serialize(tensors, None))


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    stn = _safetensors()
    if not path.exists():
        raise FileNotFoundError(f"no such weights file: {path}")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (only {len(data)} bytes)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise CheckpointError(f"{path}: truncated safetensors file (header says {header_len} bytes, "
                              f"file has {len(data) - 8} after the length)")
    try:
        return stn.load(data)
    except Exception as exc:  # safetensors raises its own error type on malformed files
        raise CheckpointError(f"{path}: malformed safetensors file ({exc})") from exc


def load(path, device="cpu") -> dict[str, Tensor]:
    """Read a safetensors file written by :func:`save` into ``{name: Tensor}`` on ``device``."""
    arrays = _read_safetensors(Path(path))
    return {k: Tensor(backend.to_device(v, device)) for k, v in arrays.items()}


# ---- nested checkpoints -------------------------------------------------------------------------

def _split(obj, path: str, arrays: dict) -> Any:
    """JSON tree of ``obj`` with every Tensor/array moved to ``arrays`` under its path."""
    if isinstance(obj, Tensor) or isinstance(obj, np.ndarray) or type(obj).__module__.startswith("cupy"):
        arrays[path] = _host_array(obj, path)
        return {"__tensor__": path, "kind": "tensor" if isinstance(obj, Tensor) else "array"}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _split(v, f"{path}.{k}" if path else k, arrays) for k, v in obj.items()}
        return {"__items__": [[_split(k, f"{path}.key{i}", arrays), _split(v, f"{path}.{k}", arrays)]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_split(v, f"{path}.{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_split(v, f"{path}.{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save {type(obj).__name__} at {path!r} in a checkpoint: only tensors, "
                    "arrays, dicts, lists, tuples, numbers, strings and None are stored (no pickle)")


def _join(tree, arrays: dict, device) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            key = tree["__tensor__"]
            if key not in arrays:
                raise CheckpointError(f"checkpoint sidecar refers to tensor {key!r}, which the weights "
                                      "file does not contain")
            a = arrays[key]
            return Tensor(backend.to_device(a, device)) if tree.get("kind") == "tensor" else a
        if "__items__" in tree:
            return {_join(k, arrays, device): _join(v, arrays, device) for k, v in tree["__items__"]}
        if "__tuple__" in tree:
            return tuple(_join(v, arrays, device) for v in tree["__tuple__"])
        return {k: _join(v, arrays, device) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays, device) for v in tree]
    return tree


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path, state: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``state`` (nested dicts/lists of tensors, arrays and JSON values) atomically as
    ``PATH.safetensors`` + ``PATH.json``; returns both paths.

    >>> import gmcore as gm, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "last")
    >>> _ = gm.io.save_checkpoint(p, {"model": {"w": gm.zeros(2)}, "step": 7})
    >>> gm.io.load_checkpoint(p)["step"]
    7
    """
    weights_path, json_path = _paths(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _split(dict(state), "", arrays)
    blob = _serialize(arrays, {"format": FORMAT})
    sidecar = {"format": FORMAT, "weights": weights_path.name,
               "weights_sha256": hashlib.sha256(blob).hexdigest(), "state": tree}
    text = json.dumps(sidecar, indent=1, sort_keys=False)
    atomic_write_bytes(weights_path, blob)
    atomic_write_text(json_path, text)
    return weights_path, json_path


def load_checkpoint(path, device="cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``PATH``, ``PATH.json`` or
    ``PATH.safetensors``); tensors come back on ``device``. Raises :class:`CheckpointError`
    naming the file when it is missing, truncated, malformed or out of step with its sidecar."""
    weights_path, json_path = _paths(path)
    if not json_path.exists():
        raise FileNotFoundError(f"no checkpoint sidecar {json_path} (expected {json_path.name} next to "
                                f"{weights_path.name})")
    try:
        sidecar = json.loads(json_path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a gmcore checkpoint sidecar (format "
                              f"{sidecar.get('format') if isinstance(sidecar, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    if not weights_path.exists():
        raise FileNotFoundError(f"checkpoint weights file {weights_path} is missing")
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    if digest != sidecar.get("weights_sha256"):
        raise CheckpointError(f"{weights_path} does not match {json_path.name} (SHA-256 differs): the "
                              "pair was not written together (interrupted save or a file replaced)")
    arrays = _read_safetensors(weights_path)
    return _join(sidecar["state"], arrays, device)
