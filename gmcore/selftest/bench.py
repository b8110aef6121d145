"""``gmcore selftest --bench``: a small built-in timing set, gmcore against torch.

benchmarks/ holds the full per-family scripts, but they live in the repository, not in the
installed package; this is the installed subset: one forward+backward case per family, timed
as the median of repeats after warm-up (CUDA events on the GPU), next to the same computation
in torch eager and, on CUDA, torch.compile (its failure is caught and reported). torch.compile
is not timed on the CPU: its first compile there takes longer than this whole command may.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .report import Row


def _timer(device, lib):
    """``time(fn) -> ms`` for one call, synchronised with the device."""
    if device != "cuda":
        def cpu(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
        return cpu
    if lib == "torch":
        import torch

        def torch_cuda(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
        return torch_cuda
    import cupy as cp

    def cupy_cuda(fn):
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        fn()
        b.record()
        b.synchronize()
        return cp.cuda.get_elapsed_time(a, b)
    return cupy_cuda


def median_ms(fn, device, lib="gmcore", repeats=10, warmup=2) -> float:
    time_one = _timer(device, lib)
    for _ in range(warmup):
        time_one(fn)
    return statistics.median(time_one(fn) for _ in range(repeats))


# Each case: (family, op, size text, arrays(rng, big) -> dict, gmcore fn(t), torch fn(t)).
# The functions take tensors by name (requires_grad set on the floating ones) and run forward
# and backward; torch functions get torch tensors of the same values.

def _lse(t, lib):
    return t["x"].logsumexp(-1).sum() if lib == "torch" else t["x"].logsumexp(-1).sum()


def _masked_conv(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF

        return TF.conv2d(t["x"], t["w"] * t["mask"], t["b"], padding=1).square().sum()
    import gmcore.functional as F

    return F.masked_conv2d(t["x"], t["w"], t["b"], mask_type="B").square().sum()


def _causal(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF

        return TF.conv1d(TF.pad(t["x"], (4, 0)), t["w"], t["b"], dilation=4).square().sum()
    import gmcore.functional as F

    return F.causal_conv1d(t["x"], t["w"], t["b"], dilation=4).square().sum()


def _coupling(t, lib):
    if lib == "torch":
        y = t["x"] * t["r"].exp() + t["b"]
        return y.square().sum() + t["r"].flatten(1).sum(1).sum()
    import gmcore.functional as F

    y, ld = F.affine_coupling(t["x"], t["r"], t["b"])
    return y.square().sum() + ld.sum()


def _eps_loss(t, lib):
    if lib == "torch":
        return (t["p"] - t["n"]).square().mean()
    import gmcore.functional as F

    return F.eps_mse_loss(t["p"], t["n"], t["t"])


def _attention(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.scaled_dot_product_attention(t["q"], t["k"], t["v"], is_causal=True).square().sum()


def _group_norm(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.group_norm(t["x"], 8, t["w"], t["b"]).square().sum()


def _cross_entropy(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.cross_entropy(t["x"], t["target"], label_smoothing=0.1)


def _embedding(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.embedding(t["idx"], t["w"]).square().sum()


def _gelu(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.gelu(t["x"]).square().sum()


def _strided_conv(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.conv2d(t["x"], t["w"], stride=2, padding=1).square().sum()


def _max_pool(t, lib):
    if lib == "torch":
        import torch.nn.functional as TF
    else:
        import gmcore.nn.functional as TF
    return TF.max_pool2d(t["x"], 2).square().sum()

def _cases(big: bool):
    s = 4 if big else 1
    mask = np.ones((32, 32, 3, 3))
    mask[:, :, 1, 2:] = 0
    mask[:, :, 2:] = 0
    return [
        ("logsumexp", "logsumexp", f"{1024 * s}x512",
         lambda r: {"x": r.standard_normal((1024 * s, 512))}, _lse),
        ("masked_conv", "masked_conv2d B 3x3", f"{4 * s}x32x16x16",
         lambda r: {"x": r.standard_normal((4 * s, 32, 16, 16)), "w": r.standard_normal((32, 32, 3, 3)) * 0.1,
                    "b": r.standard_normal(32), "mask": mask}, _masked_conv),
        ("causal_conv", "causal_conv1d d=4", f"{4 * s}x32x2048",
         lambda r: {"x": r.standard_normal((4 * s, 32, 2048)), "w": r.standard_normal((32, 32, 2)) * 0.1,
                    "b": r.standard_normal(32)}, _causal),
        ("coupling", "affine_coupling exp", f"{16 * s}x3x32x32",
         lambda r: {k: r.standard_normal((16 * s, 3, 32, 32)) for k in ("x", "r", "b")}, _coupling),
        ("diffusion", "eps_mse_loss", f"{32 * s}x3x32x32",
         lambda r: {"p": r.standard_normal((32 * s, 3, 32, 32)), "n": r.standard_normal((32 * s, 3, 32, 32)),
                    "t": r.integers(0, 1000, 32 * s)}, _eps_loss),
        ("attention", "sdpa causal", f"{4 * s}x4x256x32",
         lambda r: {n: r.standard_normal((4 * s, 4, 256, 32)) for n in ("q", "k", "v")}, _attention),
        ("norm", "group_norm 8 groups", f"{8 * s}x64x16x16",
         lambda r: {"x": r.standard_normal((8 * s, 64, 16, 16)), "w": r.standard_normal(64),
                    "b": r.standard_normal(64)}, _group_norm),
        ("softmax", "cross_entropy smooth 0.1", f"{512 * s}x1000",
         lambda r: {"x": r.standard_normal((512 * s, 1000)), "target": r.integers(0, 1000, 512 * s)},
         _cross_entropy),
        ("embedding", "embedding", f"{64 * s}x256 of 10kx128",
         lambda r: {"idx": r.integers(0, 10000, (64 * s, 256)), "w": r.standard_normal((10000, 128))},
         _embedding),
        ("activation", "gelu", f"{64 * s}x256x32",
         lambda r: {"x": r.standard_normal((64 * s, 256, 32))}, _gelu),
        ("conv", "conv2d 4x4 stride 2", f"{8 * s}x64x32x32",
         lambda r: {"x": r.standard_normal((8 * s, 64, 32, 32)), "w": r.standard_normal((128, 64, 4, 4)) * 0.05},
         _strided_conv),
        ("pool", "max_pool2d 2x2", f"{8 * s}x64x32x32",
         lambda r: {"x": r.standard_normal((8 * s, 64, 32, 32))}, _max_pool),
    ]


def _gm_step(fn, arrays, device):
    import gmcore as gm

    t = {k: gm.tensor(a.astype(np.float32) if a.dtype.kind == "f" else a, device=device,
                      requires_grad=a.dtype.kind == "f" and k != "mask") for k, a in arrays.items()}

    def step():
        for v in t.values():
            v.grad = None
        fn(t, "gmcore").backward()
    return step


def _torch_step(fn, arrays, device, compiled=False):
    import torch

    dev = "cuda" if device == "cuda" else "cpu"
    t = {k: torch.tensor(a.astype(np.float32) if a.dtype.kind == "f" else a, device=dev,
                         requires_grad=a.dtype.kind == "f" and k != "mask") for k, a in arrays.items()}
    f = torch.compile(fn) if compiled else fn

    def step():
        for v in t.values():
            v.grad = None
        f(t, "torch").backward()
    return step


def run_bench(device: str, big: bool = False, repeats: int = 10) -> list[Row]:
    """One bench row per family: gmcore (dispatch's choice) and torch eager / compile in ms."""
    from gmcore import dispatch

    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False
    rows = []
    rng = np.random.default_rng(0)
    for family, op, size, make, fn in _cases(big):
        arrays = make(rng)
        impls = sorted({r.name for r in dispatch.available(family) if r.device == device and r.active})
        row = Row("bench", family, op, "+".join(impls) or "?", device, f"fwd+bwd {size} float32")
        try:
            ms = median_ms(_gm_step(fn, arrays, device), device, "gmcore", repeats)
            row.timings["gmcore"] = ms
            if have_torch:
                eager = median_ms(_torch_step(fn, arrays, device), device, "torch", repeats)
                row.timings["torch"] = eager
                row.timings["ratio"] = f"{ms / eager:.2f}x"
                if device == "cuda":
                    try:
                        row.timings["compile"] = median_ms(_torch_step(fn, arrays, device, True), device,
                                                           "torch", repeats)
                    except Exception as exc:  # a missing compiler, an unsupported op...
                        row.detail = f"torch.compile failed: {type(exc).__name__}: {str(exc)[:120]}"
            else:
                row.detail = "torch not installed: no peer timing"
        except Exception as exc:
            row.status, row.detail = "FAIL", f"error: {type(exc).__name__}: {exc}"
        rows.append(row)
    return rows
