"""Affine coupling kernels in Triton (primary GPU path): forward + per-example log-det, backward.

Launchers take C-contiguous (B, N) arrays (CuPy on a GPU; NumPy under ``TRITON_INTERPRET=1``)
and return new arrays of the same kind. ``fn``: 0 exp, 1 sigmoid(r + 2), 2 exp(tanh r); the
definitions and the backward derivation are in ``gmcore/functional/coupling.py``.

Forward: one program per (row, block of BLOCK elements); each writes y and the block's sum of
log s into ``partial[row, block]``; the launcher sums a row's partials (deterministic, no atomics).
Backward is elementwise over B * N with the row's g_logdet.

Triton has no log1p / tanh in its core language, so the two use exact-enough rearrangements:
``log1p(e) = log(u) * e / (u - 1)`` with ``u = 1 + e`` (Goldberg: a few ulp, exact as e -> 0) and
``tanh|r| = -m / (2 + m)`` with ``m = expm1(-2|r|) = (v - 1) * (-2|r|) / log(v)``, ``v = exp(-2|r|)``
(Kahan's expm1: no cancellation near 0), ``tanh = 1`` beyond |r| > 20; ``1 - tanh^2`` is
``4v / (1 + v)^2`` (no cancellation when tanh rounds near 1).
"""
import triton
import triton.language as tl

from gmcore.backend import xp_of
from gmcore.kernels._launch import cdiv, interpreting, tl_arg

__all__ = ["coupling_forward", "coupling_backward", "SM90_KERNELS"]


@triton.jit
def _scale(r, FN: tl.constexpr):
    """(s, 1/s, log s, dlog s/dr) of raw r (true selects: inf/NaN stay exact)."""
    if FN == 0:
        s = tl.exp(r)
        inv = tl.exp(-r)
        log_s = r
        dlog = tl.full(r.shape, 1.0, r.dtype)
    elif FN == 1:
        z = r + 2.0
        e = tl.exp(-tl.abs(z))
        u = 1.0 + e
        l1p = tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))  # log1p(e), e in (0, 1]
        d = 1.0 / u
        pos = z >= 0.0
        s = tl.where(pos, d, e * d)
        inv = tl.where(pos, u, u / e)
        log_s = tl.where(pos, -l1p, z - l1p)
        dlog = tl.where(pos, e * d, d)
    else:
        a = tl.abs(r)
        v = tl.exp(-2.0 * a)
        m = tl.where(v == 1.0, -2.0 * a, (v - 1.0) * (-2.0 * a) / tl.log(v))  # expm1(-2a)
        t = -m / (2.0 + m)
        t = tl.where(a > 20.0, 1.0, t)
        log_s = tl.where(r < 0.0, -t, t)
        s = tl.exp(log_s)
        inv = tl.exp(-log_s)
        dlog = 4.0 * v / ((1.0 + v) * (1.0 + v))  # 1 - tanh^2 without cancellation
    return s, inv, log_s, dlog


@triton.jit
def _coupling_fwd_kernel(x_ptr, r_ptr, b_ptr, y_ptr, partial_ptr, n, nch, FN: tl.constexpr,
                         INV: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row = (pid // nch).to(tl.int64)  # int64 offsets: B * N may pass 2^31
    c = (pid % nch).to(tl.int64)
    cols = c * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    offs = row * n + cols
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    s, inv, log_s, dlog = _scale(r, FN)
    if INV:
        y = (x - b) * inv
    else:
        y = x * s + b
    tl.store(y_ptr + offs, y, mask=mask)
    tl.store(partial_ptr + pid, tl.sum(tl.where(mask, log_s, 0.0), axis=0))


@triton.jit
def _coupling_bwd_kernel(a_ptr, r_ptr, g_ptr, gl_ptr, din_ptr, dr_ptr, db_ptr, total, n,
                         FN: tl.constexpr, INV: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    a = tl.load(a_ptr + offs, mask=mask, other=0.0)
    r = tl.load(r_ptr + offs, mask=mask, other=0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    gl = tl.load(gl_ptr + offs // n, mask=mask, other=0.0)
    s, inv, log_s, dlog = _scale(r, FN)
    if INV:
        d_in = g * inv
        d_b = -d_in
        d_r = -(g * a + gl) * dlog
        tl.store(db_ptr + offs, d_b, mask=mask)
    else:  # d_shift = g: the caller passes g on, nothing to write
        d_in = g * s
        d_r = (d_in * a + gl) * dlog
    tl.store(din_ptr + offs, d_in, mask=mask)
    tl.store(dr_ptr + offs, d_r, mask=mask)


def _block(n, gpu_block):
    # the interpreter pays ~0.5 ms per program: fewer, larger programs there
    if interpreting():
        return max(16, min(4096, triton.next_power_of_2(max(int(n), 1))))
    return gpu_block


def coupling_forward(x, r, b, fn, inverse):
    """(B, N) arrays -> ``(y, logdet[B])``."""
    xp = xp_of(x)
    rows, n = (int(v) for v in x.shape)
    y = xp.empty_like(x)
    if rows == 0 or n == 0:
        return y, xp.zeros(rows, dtype=x.dtype)
    block = _block(n, 1024)
    nch = cdiv(n, block)
    partial = xp.empty((rows, nch), dtype=x.dtype)
    _coupling_fwd_kernel[(rows * nch,)](tl_arg(x), tl_arg(r), tl_arg(b), tl_arg(y),
                                        tl_arg(partial), n, nch, FN=int(fn), INV=bool(inverse),
                                        BLOCK=block)
    ld = partial.sum(axis=1)
    return y, (-ld if inverse else ld)


def coupling_backward(a, r, g, gl, fn, inverse):
    """-> ``(d_in, d_r, d_shift)``; ``a`` is the op's input (forward) or output (inverse);
    ``d_shift`` is None in the forward direction (it is ``g`` itself)."""
    xp = xp_of(a)
    rows, n = (int(v) for v in a.shape)
    d_in, d_r = xp.empty_like(a), xp.empty_like(a)
    d_b = xp.empty_like(a) if inverse else None  # forward: d_shift = g
    total = rows * n
    if total == 0:
        return d_in, d_r, d_b
    gl = xp.ascontiguousarray(gl, dtype=a.dtype)
    block = _block(total, 1024)
    _coupling_bwd_kernel[(cdiv(total, block),)](tl_arg(a), tl_arg(r), tl_arg(g), tl_arg(gl),
                                                tl_arg(d_in), tl_arg(d_r),
                                                tl_arg(d_in if d_b is None else d_b), total, n,
                                                FN=int(fn), INV=bool(inverse), BLOCK=block)
    return d_in, d_r, d_b


_FWD_SIG = {"x_ptr": "*fp32", "r_ptr": "*fp32", "b_ptr": "*fp32", "y_ptr": "*fp32",
            "partial_ptr": "*fp32", "n": "i32", "nch": "i32"}
_BWD_SIG = {"a_ptr": "*fp32", "r_ptr": "*fp32", "g_ptr": "*fp32", "gl_ptr": "*fp32",
            "din_ptr": "*fp32", "dr_ptr": "*fp32", "db_ptr": "*fp32", "total": "i64", "n": "i32"}

# every branch (each scale function, both directions) compiled once for sm_90
SM90_KERNELS = [
    (_coupling_fwd_kernel, _FWD_SIG, {"FN": 0, "INV": False, "BLOCK": 1024}),
    (_coupling_fwd_kernel, _FWD_SIG, {"FN": 1, "INV": True, "BLOCK": 1024}),
    (_coupling_fwd_kernel, _FWD_SIG, {"FN": 2, "INV": False, "BLOCK": 1024}),
    (_coupling_bwd_kernel, _BWD_SIG, {"FN": 0, "INV": True, "BLOCK": 1024}),
    (_coupling_bwd_kernel, _BWD_SIG, {"FN": 1, "INV": False, "BLOCK": 1024}),
    (_coupling_bwd_kernel, _BWD_SIG, {"FN": 2, "INV": True, "BLOCK": 1024}),
]
