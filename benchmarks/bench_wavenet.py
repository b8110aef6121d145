"""Benchmark the WaveNet kernels: the fused residual block and its gate kernels.

1. The block (``wavenet_residual_block``) forward, backward, forward+backward through the
   public op with ``GMCORE_KERNELS=causal_conv=<name>`` (the engine's per-op overhead
   included, as users see it). ``reference`` is the differentiable tensor-op composition;
   torch eager (and torch.compile on a GPU) is the straightforward ``conv1d`` on the left-padded
   input + ``tanh * sigmoid`` + two 1x1 ``conv1d``. Size: N=16, C=G=S=64, T=2000, K=2,
   dilation 8, float32. Bytes moved (minimum traffic): fwd reads x and writes both outputs,
   bwd reads both output gradients and x and writes dx (weights are small).
2. The gate kernels alone (``wavenet_gate_forward`` / ``_backward`` on (1, 2G, N*T), the
   layout the block calls them with), per implementation: what decides the CPU order.
3. Generation (:func:`generation_rows`, run and saved by ``bench_masked_conv.py``): samples/s
   of the incremental sampler (:class:`gmcore.nn.WaveNetGenerationState`, O(layers) per
   sample) against recomputing the receptive field for every new sample, for a 10-layer stack
   (dilations 1..512, 64 channels) at batch 1 and 16.

    python benchmarks/bench_wavenet.py [--device cpu|cuda|all] [--small] [--no-save]
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import (cases, devices, kernels_env_restored, measure, parse_args, report, row,  # noqa: E402
                      torch_or_none, use_implementation)

import gmcore as gm  # noqa: E402
import gmcore.nn.functional as F  # noqa: E402
from gmcore import dispatch  # noqa: E402

FAMILY = "causal_conv"
RESULTS = "wavenet"


def _arrays(N, C, T, G, S, K, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)  # noqa: E731
    return [f(N, C, T), f(2 * G, C, K, sc=0.1), f(2 * G), f(C, G, sc=0.1), f(C), f(S, G, sc=0.1), f(S)]


def _gm_case(arrays, device, dilation):
    ts = [gm.tensor(a, device=device, requires_grad=True) for a in arrays]
    gr = gm.tensor(np.ones(arrays[0].shape, np.float32), device=device)
    gs = gm.tensor(np.ones((arrays[0].shape[0], arrays[5].shape[0], arrays[0].shape[2]), np.float32),
                   device=device)

    def fwd():
        with gm.no_grad():
            return F.wavenet_residual_block(*ts, dilation=dilation)

    def fwd_bwd():
        res, skip = F.wavenet_residual_block(*ts, dilation=dilation)
        return gm.autograd.grad([res, skip], ts, grad_outputs=[gr, gs])

    res, skip = F.wavenet_residual_block(*ts, dilation=dilation)

    def bwd():
        return gm.autograd.grad([res, skip], ts, grad_outputs=[gr, gs], retain_graph=True)

    return fwd, bwd, fwd_bwd


def _torch_case(torch, arrays, device, dilation, compiled=False):
    dev = "cuda" if device == "cuda" else "cpu"
    ts = [torch.tensor(a, device=dev, requires_grad=True) for a in arrays]
    K = arrays[1].shape[2]
    G = arrays[1].shape[0] // 2
    tf = torch.nn.functional

    def op(x, w, b, wr, br, ws, bs):
        z = tf.conv1d(tf.pad(x, (dilation * (K - 1), 0)), w, b, dilation=dilation)
        a = torch.tanh(z[:, :G]) * torch.sigmoid(z[:, G:])
        return x + tf.conv1d(a, wr[:, :, None], br), tf.conv1d(a, ws[:, :, None], bs)

    if compiled:
        op = torch.compile(op)
    res, skip = op(*ts)
    gr, gs = torch.ones_like(res), torch.ones_like(skip)

    def fwd():
        with torch.no_grad():
            out = op(*ts)
        if dev == "cuda":
            torch.cuda.synchronize()
        return out

    def fwd_bwd():
        r, s = op(*ts)
        return torch.autograd.grad([r, s], ts, grad_outputs=[gr, gs])

    def bwd():
        return torch.autograd.grad([res, skip], ts, grad_outputs=[gr, gs], retain_graph=True)

    return fwd, bwd, fwd_bwd


def block_rows(args, device, torch):
    N, C, T, G, S, K, d = (2, 8, 64, 8, 8, 2, 4) if args.small else (16, 64, 2000, 64, 64, 2, 8)
    repeats = 2 if args.small else args.repeats
    warmup = 1 if args.small else args.warmup
    M = N * T * 4
    moved = {"fwd": (2 * C + S) * M, "bwd": (3 * C + S) * M, "fwd+bwd": (5 * C + 2 * S) * M}
    arrays = _arrays(N, C, T, G, S, K)
    size = f"N={N} C={C} G={G} S={S} T={T} K={K} d={d} fp32 {device}"
    rows = []
    for label, impl, compiled in cases(FAMILY, "wavenet_gate_forward", device, torch):
        if impl is not None:
            use_implementation(FAMILY, impl)
            fns = _gm_case(arrays, device, d)
        else:
            fns = _torch_case(torch, arrays, device, d, compiled)
        for mode, fn in zip(("fwd", "bwd", "fwd+bwd"), fns):
            stats = measure(fn, device=device, repeats=repeats, warmup=warmup)
            rows.append(row("wavenet_block", label, mode, size, stats, bytes_moved=moved[mode]))
    return rows


def gate_rows(args, device):
    """The gate kernels alone, per implementation (raw arrays in the block's layout)."""
    N, T, G = (2, 64, 8) if args.small else (16, 2000, 64)
    repeats = 2 if args.small else args.repeats
    warmup = 1 if args.small else args.warmup
    xp = np
    if device == "cuda":
        import cupy as xp
    rng = np.random.default_rng(1)
    z = xp.asarray(rng.standard_normal((1, 2 * G, N * T)).astype(np.float32))
    b = xp.asarray(rng.standard_normal(2 * G).astype(np.float32))
    ga = xp.asarray(rng.standard_normal((1, G, N * T)).astype(np.float32))
    size = f"2G={2 * G} N*T={N * T} fp32 {device}"
    rows = []
    for name in dispatch.implementations(FAMILY, device):
        try:
            use_implementation(FAMILY, name)
            fwd = dispatch.get(FAMILY, "wavenet_gate_forward", device)
            bwd = dispatch.get(FAMILY, "wavenet_gate_backward", device)
        except (dispatch.KernelUnavailable, ValueError):
            continue
        e = z.size * 4
        for mode, fn, moved in zip(("fwd", "bwd"), _gate_calls(fwd, bwd, z, b, ga),
                                   (e + 2 * e + e // 2, e + e // 2 + e)):
            stats = measure(fn, device=device, repeats=repeats, warmup=warmup)
            rows.append(row("wavenet_gate", name, mode, size, stats, bytes_moved=moved))
    return rows


def _gate_calls(fwd, bwd, z, b, ga):
    _, ts = fwd(z, b, None)
    return (lambda: fwd(z, b, None)), (lambda: bwd(ts, ga))


def _generation_calls(st, device, xp, x0, steps, recompute_steps):
    """(incremental, recompute): each generates from x0, feeding the output back."""
    batch, channels = x0.shape
    R = st.receptive_field

    def incremental():
        state = st.generation_state(batch)
        x = x0
        for _ in range(steps):
            x = xp.tanh(state.step(x))
        return x

    def recompute():
        hist = xp.zeros((batch, channels, R), dtype=np.float32)
        x = x0
        with gm.no_grad():
            for _ in range(recompute_steps):
                hist = xp.concatenate([hist[:, :, 1:], x[:, :, None]], axis=2)
                _, skip = st(gm.tensor(hist, device=device))
                x = xp.tanh(skip.data[:, :, -1])
        return x

    return incremental, recompute


def _stack(layers, channels, device, seed=0):
    gm.manual_seed(seed)
    return gm.nn.WaveNetStack(channels, channels, channels, layers=layers, stacks=1).to(device)


def generation_rows(args, device="cpu"):
    """Samples/s of incremental generation vs recomputing the receptive field per sample.

    A 10-layer stack (dilations 1..512, 64 channels; receptive field 1024) at batch 1 and 16
    (``--small``: 4 layers, 8 channels). Both feed the stack's own residual output back as the
    next input (what matters is the cost per new sample, not the values). The row's
    ``median_ms`` is the time per generated step; the note gives samples/s.
    """
    layers, channels = (4, 8) if args.small else (10, 64)
    steps = 8 if args.small else 64
    recompute_steps = 4 if args.small else 8
    st = _stack(layers, channels, device)
    R = st.receptive_field
    rows = []
    for batch in (1, 16):
        size = f"{layers} layers dil 1..{2 ** (layers - 1)} C={channels} batch={batch} {device}"
        xp = np
        if device == "cuda":
            import cupy as xp
        x0 = xp.asarray(np.random.default_rng(0).standard_normal((batch, channels)).astype(np.float32))
        incremental, recompute = _generation_calls(st, device, xp, x0, steps, recompute_steps)
        for label, fn, n in (("incremental", incremental, steps), ("recompute", recompute,
                                                                    recompute_steps)):
            t0 = time.perf_counter()
            stats = measure(fn, device=device, repeats=2 if args.small else 5, warmup=1)
            per_step = {k: v / n for k, v in stats.items()}
            rate = batch / (per_step["median_ms"] * 1e-3)
            rows.append(row("wavenet_generation", label, "generate", size, per_step,
                            note=f"{rate:.0f} samples/s (receptive field {R}; "
                                 f"{time.perf_counter() - t0:.1f}s)"))
    return rows


def main(argv=None):
    args = parse_args(RESULTS, argv)
    torch = torch_or_none()
    rows = []
    with kernels_env_restored():
        for device in devices(args.device):
            rows += block_rows(args, device, torch)
            rows += gate_rows(args, device)
    # incremental generation is reported by bench_masked_conv.py (the benchmark)
    report(rows, RESULTS, args)
    return rows


if __name__ == "__main__":
    main()
