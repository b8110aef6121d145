"""Device math shared by the Triton kernels (``tl`` has exp and log, but no expm1, log1p or tanh).

* ``expm1`` from exp/log with Kahan's correction ``(u - 1) * x / log(u)`` (a few ulps, no
  cancellation near 0), so float64 kernels stay float64-accurate;
* ``log1p`` by the same trick;
* ``tanh|x| = -m / (2 + m)`` with ``m = expm1(-2|x|)``;
* ``sigmoid`` and ``logsigmoid`` in the two-sided form: ``exp`` only ever sees ``-|x|``, so it
  never overflows (as csrc/diffusion.h and csrc/wavenet.h on the host).
"""
import triton
import triton.language as tl


@triton.jit
def expm1(x):
    u = tl.exp(x)
    um1 = u - 1.0
    corr = um1 * x / tl.log(u)
    return tl.where(u == 1.0, x, tl.where(um1 == -1.0, um1, corr))


@triton.jit
def log1p(x):
    u = 1.0 + x
    return tl.where(u == 1.0, x, tl.log(u) * x / (u - 1.0))


@triton.jit
def tanh(x):
    m = expm1(-2.0 * tl.abs(x))
    r = -m / (2.0 + m)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def sigmoid(x):
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))
