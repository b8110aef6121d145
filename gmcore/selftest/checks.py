"""Kernel checks: every available implementation of every spec against the float64 reference.

The truth of a case is the ``reference`` implementation on the CPU in float64: its outputs, and
the gradients of ``sum(output * upstream)`` for a random upstream gradient. Each implementation
registered on the device under test (``reference`` included: on the CPU that checks its float32
path, on CUDA its CuPy path) then runs the same case, in float32 and float64, forced through
``GMCORE_KERNELS`` (the dispatch's own override, so the public op runs exactly as users call it).
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from .report import Row
from .specs import SPECS, TOL64, Spec

DTYPES = (np.float32, np.float64)


@contextmanager
def forced(family: str, name: str):
    """Run ``family`` on implementation ``name`` (GMCORE_KERNELS), restoring the caller's choice."""
    from gmcore import dispatch

    old = os.environ.get(dispatch.ENV_VAR)
    os.environ[dispatch.ENV_VAR] = f"{family}={name}"
    dispatch.reset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(dispatch.ENV_VAR, None)
        else:
            os.environ[dispatch.ENV_VAR] = old
        dispatch.reset()


def _numpy(t):
    return None if t is None else np.asarray(t.detach().cpu().numpy())


def _run(spec: Spec, case, device: str, dtype, upstream=None, rng=None):
    """Outputs then gradients (in ``case.grad`` order) as NumPy arrays; makes ``upstream`` if None."""
    import gmcore as gm

    gm_dtype = gm.float32 if dtype == np.float32 else gm.float64
    tensors = {}
    for k, a in case.arrays.items():
        floating = a.dtype.kind == "f"
        tensors[k] = gm.tensor(a.astype(dtype) if floating else a, device=device,
                               dtype=gm_dtype if floating else None,
                               requires_grad=k in case.grad)
    outs = spec.call(tensors)
    outs = tuple(outs) if isinstance(outs, (tuple, list)) else (outs,)
    if case.grad:
        live = [i for i, o in enumerate(outs) if o.requires_grad]
        if upstream is None:
            upstream = {i: rng.standard_normal(tuple(outs[i].shape)) for i in live}
        loss = None
        for i in live:
            term = (outs[i] * gm.tensor(upstream[i].astype(dtype), device=device)).sum()
            loss = term if loss is None else loss + term
        if loss is not None:
            loss.backward()
    got = [_numpy(o) for o in outs] + [_numpy(tensors[k].grad) for k in case.grad]
    return got, upstream


def _labels(spec: Spec, case, n_out: int) -> list[str]:
    return [f"out{i}" for i in range(n_out)] + [f"grad {k}" for k in case.grad]


def compare(got, ref, tol: float, exact: bool = False) -> tuple[float, float, float, str | None]:
    """``(max abs error, absolute tolerance, worst error/bound ratio, problem or None)``."""
    if got is None or ref is None:
        return np.inf, 0.0, np.inf, "no gradient" if got is None else "unexpected gradient"
    if got.shape != ref.shape:
        return np.inf, 0.0, np.inf, f"shape {got.shape}, expected {ref.shape}"
    if exact:
        bad = int(np.count_nonzero(got != ref))
        return float(bad), 0.0, float(bad), (f"{bad} entries differ" if bad else None)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(r)
    if not np.array_equal(np.isfinite(g), finite) or not np.array_equal(g[~finite], r[~finite]):
        return np.inf, 0.0, np.inf, "non-finite values where the reference has none (or the reverse)"
    if not finite.any():
        return 0.0, 0.0, 0.0, None
    err = np.abs(g[finite] - r[finite])
    atol = tol * max(1.0, float(np.abs(r[finite]).max()))
    ratio = float((err / (atol + tol * np.abs(r[finite]))).max())
    return float(err.max()), atol, ratio, (None if ratio <= 1.0 else "exceeds tolerance")


def _candidates(spec: Spec, device: str):
    """``(name, available, reason)`` of implementations that have every op of ``spec`` on device."""
    from gmcore import dispatch

    out = []
    for row in dispatch.available(spec.family):
        if row.device == device and set(spec.ops) <= set(row.ops):
            out.append((row.name, row.available, row.reason))
    return out


def check_spec(spec: Spec, device: str, seed: int = 0, dtypes=DTYPES) -> list[Row]:
    """Rows for every implementation x dtype of ``spec`` on ``device``."""
    rng = np.random.default_rng(seed)
    cases = spec.build(rng)
    truths = []
    with forced(spec.family, "reference"):
        for case in cases:
            truths.append(_run(spec, case, "cpu", np.float64, rng=rng))
    rows = []
    for name, ok, reason in _candidates(spec, device):
        for dtype in dtypes:
            what = "values+grads" if any(c.grad for c in cases) else "values"
            row = Row("kernel", spec.family, spec.label, name, device,
                      f"{np.dtype(dtype).name} {what}, {len(cases)} cases")
            if not ok:
                row.status, row.detail = "skip", f"unavailable: {reason}"
                rows.append(row)
                continue
            tol = spec.tol32 if dtype == np.float32 else TOL64
            row.tol = tol
            try:
                with forced(spec.family, name):
                    for case, (ref, upstream) in zip(cases, truths):
                        got, _ = _run(spec, case, device, dtype, upstream=upstream)
                        labels = _labels(spec, case, len(got) - len(case.grad))
                        for i, (g, r, lab) in enumerate(zip(got, ref, labels)):
                            err, atol, ratio, problem = compare(g, r, tol, exact=i in spec.exact)
                            row.absorb(err, atol, ratio, f"case {case.name!r}, {lab}: {problem}"
                                       if problem else None)
            except Exception as exc:  # a crash is a failure of this row, never of the run
                row.status, row.detail = "FAIL", f"error: {type(exc).__name__}: {exc}"
            rows.append(row)
    return rows


def run_kernel_checks(device: str, seed: int = 0, dtypes=DTYPES, families=None) -> list[Row]:
    rows = []
    for spec in SPECS:
        if families is None or spec.family in families:
            rows += check_spec(spec, device, seed, dtypes)
    return rows
