"""Saving and loading: tensors in safetensors, everything else as JSON; never pickle.

Two levels:

* :func:`save` / :func:`load` write and read a flat ``{name: Tensor}`` mapping (a ``state_dict``)
  as one ``.safetensors`` file.
* :func:`save_checkpoint` / :func:`load_checkpoint` write a training state of any nesting
  (model and optimizer ``state_dict``, scheduler, EMA, RNG and data-loader positions, config,
  step) as ONE file, ``NAME.safetensors``: every array is a tensor of the file, and the structure
  (a JSON tree in which each array is replaced by a reference to its key) sits in the file's
  header metadata together with a SHA-256 over the tensors (names, dtypes, shapes, bytes), so
  corruption and editing are detected. ``NAME.json`` is written afterwards as a readable copy of
  that tree; loading never reads it.

Why one file: the file is renamed into place once, so at every instant the folder holds a
complete checkpoint, the previous one or the new one. (The first format, a weights file plus a
JSON sidecar naming the weights' SHA-256, needed two renames; a kill between them left a pair
that no longer matched. :func:`load_checkpoint` still reads that format.) The save also defers
SIGINT and SIGTERM until it is done (:func:`deferred_signals`), and a kill leaves at most a
``.NAME.*.tmp`` file behind, which :func:`remove_temp_files` clears at the next start.

Fault injection, for tests: ``GMCORE_FAULT_INJECT=save:POINT`` makes :func:`save_checkpoint`
SIGKILL its own process at ``POINT`` (one of :data:`SAVE_FAULT_POINTS`);
``save:POINT:SIGINT`` sends SIGINT instead (a Ctrl-C landing inside the save).

>>> import gmcore as gm, tempfile, os
>>> d = tempfile.mkdtemp()
>>> gm.save({"w": gm.ones(2, 3)}, os.path.join(d, "w.safetensors"))
>>> gm.load(os.path.join(d, "w.safetensors"))["w"].shape
gmcore.Size([2, 3])
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from . import backend
from .tensor import Tensor

__all__ = ["save", "load", "save_checkpoint", "load_checkpoint", "atomic_write_bytes",
           "atomic_write_text", "deferred_signals", "remove_temp_files", "CheckpointError",
           "SAVE_FAULT_POINTS"]

FORMAT = "gmcore-checkpoint-2"        # one file; the JSON tree in the safetensors metadata
PAIR_FORMAT = "gmcore-checkpoint-1"   # weights file + JSON sidecar (read, no longer written)

# Every step of save_checkpoint, in order, at which GMCORE_FAULT_INJECT can stop the process:
# the weights file (the checkpoint itself), then its readable JSON copy.
_FILE_STEPS = ("created", "half-written", "written", "flushed", "fsynced", "renamed", "dir-fsynced")
SAVE_FAULT_POINTS = tuple(f"{part}-{s}" for part in ("weights", "json") for s in _FILE_STEPS)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt, or does not match its sidecar."""


def _safetensors():
    try:
        import safetensors.numpy as stn
    except ImportError as exc:
        raise ImportError("saving and loading weights needs the 'safetensors' package: "
                          "pip install 'gmcore[train]'") from exc
    return stn


# ---- fault injection and signals -------------------------------------------------------------

def _fault_spec() -> tuple[str, str] | None:
    """(point, signal name) from GMCORE_FAULT_INJECT=save:POINT[:SIGNAL], checked, or None."""
    spec = os.environ.get("GMCORE_FAULT_INJECT", "")
    if not spec.startswith("save:"):
        return None
    point, _, sig = spec[len("save:"):].partition(":")
    if point not in SAVE_FAULT_POINTS:
        raise ValueError(f"GMCORE_FAULT_INJECT={spec!r}: unknown save point {point!r}; known: "
                         + ", ".join(SAVE_FAULT_POINTS))
    if sig not in ("", "SIGKILL", "SIGINT", "SIGTERM"):
        raise ValueError(f"GMCORE_FAULT_INJECT={spec!r}: signal must be SIGKILL, SIGINT or SIGTERM")
    return point, sig or "SIGKILL"


def _fault(point: str, spec) -> None:
    if spec is None or spec[0] != point:
        return
    sig = getattr(signal, spec[1], None)
    if sig is None:        # no SIGKILL on Windows: the closest thing is an immediate exit
        os._exit(137)
    os.kill(os.getpid(), sig)


@contextlib.contextmanager
def deferred_signals(signums=(signal.SIGINT, signal.SIGTERM)):
    """Hold SIGINT/SIGTERM until the block ends, then deliver them to the handlers in place.

    Used around a checkpoint save so that a Ctrl-C (or a second one) cannot stop it halfway.
    Signal handlers can only be set in the main thread; elsewhere the block runs unchanged.

    >>> import signal
    >>> with deferred_signals():
    ...     signal.getsignal(signal.SIGINT).__name__
    '_hold'
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def _hold(signum, frame):
        received.append(signum)

    previous = {}
    for s in signums:
        old = signal.getsignal(s)
        if old is None:    # a handler installed outside Python: it could not be put back
            continue
        previous[s] = old
        signal.signal(s, _hold)
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
        for s in received:    # each runs its handler now (KeyboardInterrupt for a default SIGINT)
            signal.raise_signal(s)


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


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else by a
    set-and-restore (os.umask is the only portable reader)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, data: bytes, fault_part: str = "", fault=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # mkstemp makes 0600; outputs get open()'s usual mode
        os.fchmod(fd, 0o666 & ~_umask())
    hook = (lambda step: _fault(f"{fault_part}-{step}", fault)) if fault_part else (lambda step: None)
    try:
        hook("created")
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            f.write(view[:len(data) // 2])
            f.flush()   # so that a kill at the next point leaves a truly half-written file
            hook("half-written")
            f.write(view[len(data) // 2:])
            hook("written")
            f.flush()
            hook("flushed")
            os.fsync(f.fileno())
            hook("fsynced")
        os.replace(tmp, path)
        hook("renamed")
    except BaseException:  # includes KeyboardInterrupt: never leave the temporary behind
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    hook("dir-fsynced")


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    _atomic_write(Path(path), data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")   # tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")


def remove_temp_files(folder) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files an interrupted atomic write left in ``folder``; returns them.

    Call it only while no other process writes into the folder (e.g. holding its run lock).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.iterdir()):
        if _TEMP_NAME.match(p.name) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


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


def _read_file(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(header metadata, arrays) of a safetensors file; CheckpointError naming it when malformed."""
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
        header = json.loads(data[8:8 + header_len])
        arrays = stn.load(data)
    except Exception as exc:  # safetensors raises its own error type on malformed files
        raise CheckpointError(f"{path}: malformed safetensors file ({exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return (meta if isinstance(meta, dict) else {}), arrays


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    return _read_file(path)[1]


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


def _join(tree, arrays: dict, device, file: Path) -> Any:
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            key = tree["__tensor__"]
            if not isinstance(key, str) or key not in arrays:
                raise CheckpointError(f"{file}: the checkpoint's state refers to tensor {key!r}, which "
                                      "the file does not contain")
            a = arrays[key]
            return Tensor(backend.to_device(a, device)) if tree.get("kind") == "tensor" else a
        if "__items__" in tree:
            items = tree["__items__"]
            if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise CheckpointError(f"{file}: malformed mapping in the checkpoint's state")
            try:
                return {_join(k, arrays, device, file): _join(v, arrays, device, file) for k, v in items}
            except TypeError as exc:  # an unhashable key
                raise CheckpointError(f"{file}: malformed mapping key in the checkpoint's state") from exc
        if "__tuple__" in tree:
            if not isinstance(tree["__tuple__"], list):
                raise CheckpointError(f"{file}: malformed tuple in the checkpoint's state")
            return tuple(_join(v, arrays, device, file) for v in tree["__tuple__"])
        return {k: _join(v, arrays, device, file) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, arrays, device, file) for v in tree]
    return tree


def _tensors_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (independent of the file layout)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        h.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return h.hexdigest()


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path, state: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``state`` (nested dicts/lists of tensors, arrays and JSON values) as the single file
    ``PATH.safetensors``, renamed into place once, then its readable copy ``PATH.json``;
    returns both paths. SIGINT/SIGTERM arriving meanwhile are handled after the save.

    >>> import gmcore as gm, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "last")
    >>> _ = gm.io.save_checkpoint(p, {"model": {"w": gm.zeros(2)}, "step": 7})
    >>> gm.io.load_checkpoint(p)["step"]
    7
    """
    fault = _fault_spec()
    weights_path, json_path = _paths(path)
    arrays: dict[str, np.ndarray] = {}
    tree = _split(dict(state), "", arrays)
    digest = _tensors_sha256(arrays)
    blob = _serialize(arrays, {"format": FORMAT, "tensors_sha256": digest, "state": json.dumps(tree)})
    copy = json.dumps({"format": FORMAT, "note": f"a readable copy of the state stored in "
                       f"{weights_path.name}, which is all that loading reads",
                       "weights": weights_path.name, "tensors_sha256": digest, "state": tree}, indent=1)
    with deferred_signals():
        _atomic_write(weights_path, blob, "weights", fault)
        _atomic_write(json_path, copy.encode("utf-8"), "json", fault)
    return weights_path, json_path


def load_checkpoint(path, device="cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``PATH``, ``PATH.json`` or
    ``PATH.safetensors``); tensors come back on ``device``. Raises :class:`CheckpointError`
    naming the file when it is truncated, malformed or fails its SHA-256, FileNotFoundError when
    there is none. Checkpoints of the earlier two-file format (weights + sidecar) load too."""
    weights_path, json_path = _paths(path)
    if weights_path.exists():
        meta, arrays = _read_file(weights_path)
        if meta.get("format") == FORMAT:
            return _load_single(weights_path, meta, arrays, device)
        if meta.get("format") != PAIR_FORMAT:
            raise CheckpointError(f"{weights_path}: not a gmcore checkpoint (format "
                                  f"{meta.get('format')!r}, expected {FORMAT!r})")
    elif not json_path.exists():
        raise FileNotFoundError(f"no checkpoint {weights_path} (nor an older-format sidecar "
                                f"{json_path.name})")
    return _load_pair(weights_path, json_path, device)


def _load_single(file: Path, meta: dict, arrays: dict, device) -> dict[str, Any]:
    if _tensors_sha256(arrays) != meta.get("tensors_sha256"):
        raise CheckpointError(f"{file}: the tensors do not match the SHA-256 stored with them "
                              "(the file was corrupted or edited)")
    try:
        tree = json.loads(meta.get("state", ""))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: the state in the header is not valid JSON ({exc})") from exc
    if not isinstance(tree, dict):
        raise CheckpointError(f"{file}: the state in the header is not a JSON object")
    return _join(tree, arrays, device, file)


def _load_pair(weights_path: Path, json_path: Path, device) -> dict[str, Any]:
    """The first format: ``PATH.json`` (the tree and the weights' SHA-256) + ``PATH.safetensors``."""
    if not json_path.exists():
        raise FileNotFoundError(f"no checkpoint sidecar {json_path} (expected {json_path.name} next to "
                                f"{weights_path.name})")
    try:
        sidecar = json.loads(json_path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(sidecar, dict) or sidecar.get("format") != PAIR_FORMAT:
        raise CheckpointError(f"{json_path}: not a gmcore checkpoint sidecar (format "
                              f"{sidecar.get('format') if isinstance(sidecar, dict) else None!r}, "
                              f"expected {PAIR_FORMAT!r})")
    if not weights_path.exists():
        raise FileNotFoundError(f"checkpoint weights file {weights_path} is missing")
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    if digest != sidecar.get("weights_sha256"):
        raise CheckpointError(f"{weights_path} does not match {json_path.name} (SHA-256 differs): the "
                              "pair was not written together (interrupted save or a file replaced)")
    arrays = _read_safetensors(weights_path)
    if not isinstance(sidecar.get("state"), dict):
        raise CheckpointError(f"{json_path}: field 'state' is missing or not an object")
    return _join(sidecar["state"], arrays, device, json_path)
