"""Kernel registry: (family, op, device) -> implementations in preference order.

Every kernel family (``logsumexp``, ``dlml``, ``vq``, ...) registers its implementations with
:func:`register`; a differentiable op asks :func:`get` for the one to run::

    from gmcore import dispatch
    dispatch.register("logsumexp", "forward", "cpu", "cpp", _load_cpp)   # preferred
    dispatch.register("logsumexp", "forward", "cpu", "reference", lambda: _reference)
    fn = dispatch.get("logsumexp", "forward", "cpu")                     # cpp if it loads

A *loader* is a zero-argument callable that returns the implementation (any callable) or
raises ``ImportError`` / ``RuntimeError`` saying why it is unavailable. Loaders run lazily, on
first use, and their outcome is cached: importing gmcore imports no kernel library.

Choice: the first implementation (in registration order, or the order given to
:func:`set_preference`) whose loader succeeds. The environment variable ``GMCORE_KERNELS``
overrides it, read once per process (call :func:`reset` after changing it)::

    GMCORE_KERNELS=reference                  # every family runs its reference math
    GMCORE_KERNELS=logsumexp=cpp,dlml=numba   # per family
    GMCORE_KERNELS=reference,dlml=numba       # both: the per-family entry wins

An override applies on the devices where the named implementation is registered (``cpp`` is a
CPU implementation: ``logsumexp=cpp`` leaves the choice on CUDA alone). An unknown family or
implementation name, or a requested implementation that fails to load, raises an error naming
family, implementation and reason. There is never a silent fallback.
"""

from __future__ import annotations

import importlib
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "KernelUnavailable",
    "register",
    "unregister",
    "set_preference",
    "get",
    "choose",
    "families",
    "implementations",
    "available",
    "table",
    "format_table",
    "overrides",
    "reset",
    "DEVICES",
]

ENV_VAR = "GMCORE_KERNELS"
DEVICES = ("cpu", "cuda")

# Families whose registrations live in a module of their own: imported on demand so that
# ``dispatch.get("dlml", ...)`` and ``gmcore kernels`` see them without importing everything
# at ``import gmcore`` time. A family may also register from anywhere else.
FAMILY_MODULES: dict[str, str] = {
    "logsumexp": "gmcore.functional.logsumexp",
    "dlml": "gmcore.functional.dlml",
    "vq": "gmcore.functional.vq",
    "coupling": "gmcore.functional.coupling",
    "diffusion": "gmcore.functional.diffusion",
    "masked_conv": "gmcore.functional.masked_conv",
    "causal_conv": "gmcore.functional.causal_conv",
    "spline": "gmcore.functional.spline",
    "softmax": "gmcore.functional.softmax",
    "embedding": "gmcore.functional._embedding",
    "norm": "gmcore.functional._norm",
    "pool": "gmcore.functional.pool",
    "conv": "gmcore.functional.conv",
    "attention": "gmcore.functional.attention",
    "activation": "gmcore.functional._activation_kernels",
}


class KernelUnavailable(RuntimeError):
    """A requested kernel implementation cannot run here (the message says why)."""


@dataclass
class _Entry:
    family: str
    op: str
    device: str
    name: str
    loader: Callable[[], Any]
    # cached loader outcome: (True, impl) or (False, reason)
    outcome: tuple[bool, Any] | None = field(default=None, repr=False)


_lock = threading.RLock()
# (family, op, device) -> entries in registration order
_entries: dict[tuple[str, str, str], list[_Entry]] = {}
# (family, device) -> explicit preference order of implementation names
_preference: dict[tuple[str, str], list[str]] = {}
# (family, op, device) -> (name, impl)
_choice: dict[tuple[str, str, str], tuple[str, Any]] = {}
_env: dict[str, str] | None = None  # parsed GMCORE_KERNELS: family (or "*") -> name
_imported_families: set[str] = set()


def _device_type(device: Any) -> str:
    """Accept "cpu", "cuda", "cuda:1" or a device object with ``.type``."""
    if isinstance(device, str):
        dev = device.split(":", 1)[0]
    else:
        dev = getattr(device, "type", None)
        if dev is None:
            raise TypeError(f"dispatch: expected a device name or device object, got {device!r}")
    if dev not in DEVICES:
        raise ValueError(f"dispatch: unknown device type {dev!r} (expected one of {DEVICES})")
    return dev


def register(family: str, op: str, device: str, name: str, loader: Callable[[], Any]) -> None:
    """Register implementation ``name`` of ``(family, op)`` on ``device`` ("cpu" or "cuda").

    ``loader()`` returns the implementation or raises ImportError/RuntimeError saying why it is
    unavailable. Registering the same (family, op, device, name) again replaces the loader.
    """
    device = _device_type(device)
    if not callable(loader):
        raise TypeError(f"dispatch.register: loader for {family}/{name} must be callable")
    with _lock:
        lst = _entries.setdefault((family, op, device), [])
        for i, e in enumerate(lst):
            if e.name == name:
                lst[i] = _Entry(family, op, device, name, loader)
                break
        else:
            lst.append(_Entry(family, op, device, name, loader))
        _choice.clear()


def unregister(family: str) -> None:
    """Remove every implementation of ``family`` (for tests registering throwaway families)."""
    with _lock:
        for key in [k for k in _entries if k[0] == family]:
            del _entries[key]
        for key in [k for k in _preference if k[0] == family]:
            del _preference[key]
        _choice.clear()


def set_preference(family: str, device: str, names: list[str] | tuple[str, ...]) -> None:
    """Try ``names`` first, in this order, for ``family`` on ``device`` (others follow)."""
    with _lock:
        _preference[(family, _device_type(device))] = list(names)
        _choice.clear()


def _ensure_family(family: str) -> None:
    """Import the module that registers ``family`` (once; a missing module is not an error)."""
    mod = FAMILY_MODULES.get(family)
    if mod is None or family in _imported_families:
        return
    _imported_families.add(family)
    try:
        importlib.import_module(mod)
    except ModuleNotFoundError as exc:
        if exc.name != mod:  # the module exists but one of its imports failed: say so
            raise


def _ensure_all() -> None:
    for fam in FAMILY_MODULES:
        _ensure_family(fam)


def families() -> list[str]:
    """Families with at least one registered implementation."""
    _ensure_all()
    with _lock:
        seen: dict[str, None] = {}
        for fam, _, _ in _entries:
            seen.setdefault(fam)
        return list(seen)


def implementations(family: str, device: str | None = None) -> list[str]:
    """Implementation names of ``family`` (on ``device`` if given), in preference order."""
    _ensure_family(family)
    devs = DEVICES if device is None else (_device_type(device),)
    names: dict[str, None] = {}
    with _lock:
        for dev in devs:
            for (fam, _op, d), lst in _entries.items():
                if fam == family and d == dev:
                    for e in _ordered(lst, family, dev):
                        names.setdefault(e.name)
    return list(names)


def _ordered(lst: list[_Entry], family: str, device: str) -> list[_Entry]:
    pref = _preference.get((family, device))
    if not pref:
        return list(lst)
    rank = {n: i for i, n in enumerate(pref)}
    return sorted(lst, key=lambda e: (rank.get(e.name, len(rank)), lst.index(e)))


def _load(entry: _Entry) -> tuple[bool, Any]:
    if entry.outcome is None:
        try:
            impl = entry.loader()
        except (ImportError, RuntimeError, OSError) as exc:
            entry.outcome = (False, f"{type(exc).__name__}: {exc}")
        else:
            entry.outcome = (True, impl)
    return entry.outcome


def _parse_env(value: str) -> dict[str, str]:
    """Parse GMCORE_KERNELS; names are validated against the registry (errors name the item)."""
    out: dict[str, str] = {}
    for item in (p.strip() for p in value.split(",")):
        if not item:
            continue
        if "=" in item:
            fam, _, name = (s.strip() for s in item.partition("="))
            if not fam or not name:
                raise ValueError(f"{ENV_VAR}: malformed entry {item!r} (expected family=implementation)")
            out[fam] = name
        elif item == "reference":
            out["*"] = item
        else:
            raise ValueError(
                f"{ENV_VAR}: {item!r} is not understood; use 'reference' (every family) "
                f"or family=implementation entries, e.g. 'logsumexp=cpp,dlml=numba'"
            )
    return out


def overrides() -> dict[str, str]:
    """The parsed ``GMCORE_KERNELS`` (``"*"`` = all families), validated; read once per process."""
    global _env
    with _lock:
        if _env is None:
            parsed = _parse_env(os.environ.get(ENV_VAR, ""))
            for fam, name in parsed.items():
                if fam == "*":
                    continue
                _ensure_family(fam)
                known = implementations(fam)
                if not known:
                    raise ValueError(
                        f"{ENV_VAR}: unknown kernel family {fam!r} "
                        f"(known: {', '.join(sorted(set(families()))) or 'none'})"
                    )
                if name not in known:
                    raise ValueError(
                        f"{ENV_VAR}: family {fam!r} has no implementation {name!r} "
                        f"(registered: {', '.join(known)})"
                    )
            _env = parsed
        return _env


def choose(family: str, op: str, device: Any) -> tuple[str, Any]:
    """Return ``(name, implementation)`` for ``(family, op)`` on ``device``."""
    dev = _device_type(device)
    key = (family, op, dev)
    hit = _choice.get(key)
    if hit is not None:
        return hit
    with _lock:
        _ensure_family(family)
        env = overrides()
        lst = _entries.get(key)
        if not lst:
            known = sorted({f for f, _, _ in _entries})
            if family not in known:
                raise ValueError(f"dispatch: unknown kernel family {family!r} (known: {', '.join(known) or 'none'})")
            raise KernelUnavailable(f"dispatch: family {family!r} has no implementation of op {op!r} on {dev}")
        wanted = env.get(family, env.get("*"))
        if wanted is not None and wanted in implementations(family, dev):
            entry = next((e for e in lst if e.name == wanted), None)
            if entry is None:
                raise KernelUnavailable(
                    f"dispatch: {ENV_VAR} asks for {family}={wanted}, which has no op {op!r} on {dev}"
                )
            ok, val = _load(entry)
            if not ok:
                raise KernelUnavailable(
                    f"dispatch: {ENV_VAR} asks for {family}={wanted} on {dev}, "
                    f"but it is unavailable: {val}"
                )
            result = (wanted, val)
        else:
            reasons = []
            for entry in _ordered(lst, family, dev):
                ok, val = _load(entry)
                if ok:
                    result = (entry.name, val)
                    break
                reasons.append(f"{entry.name}: {val}")
            else:
                raise KernelUnavailable(
                    f"dispatch: no implementation of {family}/{op} is available on {dev} ("
                    + "; ".join(reasons) + ")"
                )
        _choice[key] = result
        return result


def get(family: str, op: str, device: Any) -> Any:
    """The implementation to run for ``(family, op)`` on ``device`` (see module docstring)."""
    return choose(family, op, device)[1]


@dataclass
class Row:
    """One line of the dispatch table."""

    family: str
    name: str
    device: str
    ops: tuple[str, ...]
    available: bool
    reason: str | None  # why unavailable (None when available)
    active: bool  # chosen for every op of the family on this device


def available(family: str) -> list[Row]:
    """Every implementation of ``family`` per device: available or why not, and which is active.

    Runs the loaders (so it may import numba, triton, cupy, gmcore._C).
    """
    _ensure_family(family)
    rows: list[Row] = []
    with _lock:
        for dev in DEVICES:
            ops = [op for (fam, op, d) in _entries if fam == family and d == dev]
            active: dict[str, str | None] = {}
            for op in ops:
                try:
                    active[op] = choose(family, op, dev)[0]
                except (KernelUnavailable, ValueError):
                    active[op] = None
            for name in implementations(family, dev):
                mine = [e for op in ops for e in _entries[(family, op, dev)] if e.name == name]
                reason = None
                for e in mine:
                    ok, val = _load(e)
                    if not ok:
                        reason = f"{e.op}: {val}" if len(mine) > 1 else val
                        break
                rows.append(
                    Row(
                        family=family,
                        name=name,
                        device=dev,
                        ops=tuple(e.op for e in mine),
                        available=reason is None,
                        reason=reason,
                        active=bool(ops) and all(active[op] == name for op in ops),
                    )
                )
    return rows


def table() -> list[Row]:
    """:func:`available` for every family."""
    return [row for fam in families() for row in available(fam)]


def format_table(rows: list[Row] | None = None) -> str:
    """Human-readable table for ``gmcore kernels``."""
    rows = table() if rows is None else rows
    try:
        env_desc = os.environ.get(ENV_VAR) or "(unset)"
        overrides()
    except ValueError as exc:
        env_desc = f"INVALID: {exc}"
    lines = [f"{ENV_VAR}={env_desc}", ""]
    header = ("family", "device", "implementation", "status", "why not")
    data = []
    for r in rows:
        status = "available" if r.available else "unavailable"
        data.append((r.family, r.device, r.name + (" *" if r.active else ""), status, r.reason or ""))
    widths = [max(len(h), *(len(d[i]) for d in data)) if data else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines.append(fmt.format(*header).rstrip())
    lines.append(fmt.format(*("-" * w for w in widths)).rstrip())
    for d in data:
        lines.append(fmt.format(*d).rstrip())
    lines.append("")
    lines.append("* = active (chosen for every op of the family on that device)")
    return "\n".join(lines)


def reset() -> None:
    """Forget cached choices, loader outcomes and the parsed environment (for tests)."""
    global _env
    with _lock:
        _env = None
        _choice.clear()
        for lst in _entries.values():
            for e in lst:
                e.outcome = None


# ---------------------------------------------------------------------------------------------
# Helpers for loaders (shared by every family)


def require_cupy():
    """Return the cupy module if it imports and sees a GPU, else raise RuntimeError saying why."""
    try:
        from gmcore import backend

        cp = backend.cupy_or_none()
    except (ImportError, AttributeError):
        cp = None
        try:
            import cupy as cp  # noqa: F811
        except ImportError as exc:
            raise RuntimeError(f"cupy is not installed ({exc})") from None
    if cp is None:
        raise RuntimeError("cupy is not installed or sees no GPU")
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # cupy raises CUDARuntimeError without a driver
        raise RuntimeError(f"no usable CUDA device ({exc})") from None
    if n == 0:
        raise RuntimeError("no visible CUDA device")
    return cp


def require_C(cuda: bool = False):
    """Return ``gmcore._C`` (built with CUDA if ``cuda``), else raise ImportError/RuntimeError."""
    try:
        from gmcore import _C
    except ImportError as exc:
        raise ImportError(f"gmcore._C is not built ({exc})") from None
    if cuda:
        if not _C.has_cuda:
            raise RuntimeError("gmcore._C was built without CUDA (no nvcc at build time)")
        if _C.cuda_device_count() == 0:
            raise RuntimeError("gmcore._C sees no CUDA device")
    return _C
