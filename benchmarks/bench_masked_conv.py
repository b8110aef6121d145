"""Benchmark the tap-convolution kernels (families masked_conv and causal_conv).

Cases: PixelCNN masked conv2d, N=32, 64 -> 64 channels, 32x32, 7x7 mask "A" (24 of 49 taps)
and 3x3 mask "B" (5 of 9 taps); WaveNet causal conv1d, N=16, 128 -> 128 channels, T=16000,
K=2, a stack of dilations 1, 2, ..., 512 (times summed over the stack); and plain ``F.conv2d``
3x3 (N=32, 64 -> 64, 32x32, padding 1), which routes through the tap kernels where dispatch op
``masked_conv/conv2d`` picks them (row ``cpp``/``triton``/``cuda``) or keeps im2col + BLAS (row
``reference``; the causal reference row pins that route to im2col as well). Every implementation
available on the device runs through the public op (``GMCORE_KERNELS``-style selection; the
``reference`` row is the Tensor-op path: gmcore's im2col conv2d on ``weight * mask``), next to
torch eager written the straightforward way (``conv2d(x, weight * mask)``; ``conv1d`` on the
left-padded input) when torch is installed. Input and weight both need gradients (a layer
inside a network), float32. Last, WaveNet generation: samples/s of the incremental sampler
(per-layer queues) against recomputing the receptive field for every new sample
(``bench_wavenet.generation_rows``).

    python benchmarks/bench_masked_conv.py --device cpu
    python benchmarks/bench_masked_conv.py --small --no-save      # smoke run
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import (devices, kernels_env_restored, measure, parse_args, report, row,  # noqa: E402
                      torch_or_none, use_implementation)

import gmcore as gm  # noqa: E402
import gmcore.nn.functional as F  # noqa: E402
from bench_wavenet import generation_rows  # noqa: E402
from gmcore import dispatch  # noqa: E402


def _cases(small):
    """(family, label, spec): masked specs (N, C, O, H, W, k, mask), causal (N, C, T, K, dils),
    plain conv2d (N, C, O, H, W, k)."""
    if small:
        return [("masked_conv", "N=2 8->8 12x12 7x7 A", ("masked", 2, 8, 8, 12, 12, 7, "A")),
                ("masked_conv", "conv2d N=2 8->8 12x12 3x3", ("plain", 2, 8, 8, 12, 12, 3)),
                ("masked_conv", "N=2 8->8 12x12 3x3 B", ("masked", 2, 8, 8, 12, 12, 3, "B")),
                ("causal_conv", "N=2 16ch T=500 K=2 d=1..8",
                 ("causal", 2, 16, 500, 2, (1, 2, 4, 8)))]
    return [("masked_conv", "N=32 64->64 32x32 7x7 A", ("masked", 32, 64, 64, 32, 32, 7, "A")),
            ("masked_conv", "N=32 64->64 32x32 3x3 B", ("masked", 32, 64, 64, 32, 32, 3, "B")),
            ("causal_conv", "N=16 128ch T=16000 K=2 d=1..512 (10 layers)",
             ("causal", 16, 128, 16000, 2, tuple(2 ** i for i in range(10)))),
            ("masked_conv", "conv2d N=32 64->64 32x32 3x3", ("plain", 32, 64, 64, 32, 32, 3))]


def _data(spec, seed=0):
    rng = np.random.default_rng(seed)
    if spec[0] in ("masked", "plain"):
        n, c, o, h, w, k = spec[1:7]
        x = rng.standard_normal((n, c, h, w), dtype=np.float32)
        ws = [rng.standard_normal((o, c, k, k), dtype=np.float32) * 0.05]
    else:
        _, n, c, t, k, dils = spec
        x = rng.standard_normal((n, c, t), dtype=np.float32)
        ws = [rng.standard_normal((c, c, k), dtype=np.float32) * 0.05 for _ in dils]
    return x, ws


def _bytes(spec, x, ws, mode):
    """Minimum traffic: read x and w, write y (fwd); read gy, x, w, write gx, gw (bwd)."""
    layers = len(ws)
    fwd = layers * (2 * x.nbytes + ws[0].nbytes)
    bwd = layers * (3 * x.nbytes + 2 * ws[0].nbytes)
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]


def _bench(run, grad_of, device, args, heavy, sync=lambda: None, no_grad=None):
    # the causal stack runs seconds per call, and --small is a smoke run: fewer timed calls
    reps, warm = args.repeats, args.warmup
    if heavy:
        reps, warm = max(3, reps // 5), min(warm, 1)
    elif args.small:
        reps, warm = min(reps, 3), min(warm, 1)
    out = {}

    def fwd():
        with no_grad():
            run()
        sync()

    def fwd_bwd():
        grad_of(run())
        sync()

    holder = [None]

    def bwd():
        grad_of(holder[0], retain=True)
        sync()

    out["fwd"] = measure(fwd, device, reps, warm)
    out["fwd+bwd"] = measure(fwd_bwd, device, reps, warm)
    holder[0] = run()
    out["bwd"] = measure(bwd, device, reps, warm)
    holder[0] = None
    return out


def _gm_runner(spec, x, ws, device):
    xt = gm.tensor(x, device=device, requires_grad=True)
    wts = [gm.tensor(w, device=device, requires_grad=True) for w in ws]
    if spec[0] == "masked":
        mask_type = spec[7]

        def run():
            return F.masked_conv2d(xt, wts[0], mask_type=mask_type)
    elif spec[0] == "plain":
        def run():
            return F.conv2d(xt, wts[0], padding=spec[6] // 2)
    else:
        dils = spec[5]

        def run():
            y = xt
            for w, d in zip(wts, dils):
                y = F.causal_conv1d(y, w, dilation=d)
            return y

    def grad_of(y, retain=False):
        xt.grad = None
        for w in wts:
            w.grad = None
        y.sum().backward(retain_graph=retain)

    return run, grad_of


def _torch_runner(torch, spec, x, ws, device):
    dev = "cuda" if device == "cuda" else "cpu"
    tf = torch.nn.functional
    xt = torch.tensor(x, device=dev, requires_grad=True)
    wts = [torch.tensor(w, device=dev, requires_grad=True) for w in ws]
    if spec[0] == "masked":
        o, c, k = ws[0].shape[0], ws[0].shape[1], ws[0].shape[2]
        mask = torch.tensor(F.masked_conv2d_mask(o, c, k, spec[7]), dtype=torch.float32,
                            device=dev)

        def run():
            return tf.conv2d(xt, wts[0] * mask, padding=k // 2)
    elif spec[0] == "plain":
        def run():
            return tf.conv2d(xt, wts[0], padding=spec[6] // 2)
    else:
        dils, k = spec[5], spec[4]

        def run():
            y = xt
            for w, d in zip(wts, dils):
                y = tf.conv1d(tf.pad(y, ((k - 1) * d, 0)), w, dilation=d)
            return y

    def grad_of(y, retain=False):
        xt.grad = None
        for w in wts:
            w.grad = None
        y.sum().backward(retain_graph=retain)

    return run, grad_of


def _loads(family, op, device, name):
    """Whether implementation ``name`` of ``family/op`` is registered and loads on ``device``."""
    use_implementation(family, name)
    try:
        dispatch.choose(family, op, device)
        return True
    except (dispatch.KernelUnavailable, ValueError):
        return False


def main(argv=None):
    args = parse_args("masked_conv", argv)
    torch = torch_or_none()
    rows = []
    with kernels_env_restored():
        for device in devices(args.device):
            for family, label, spec in _cases(args.small):
                x, ws = _data(spec)
                heavy = spec[0] == "causal" and not args.small
                op = "conv2d" if spec[0] == "plain" else "tap_conv2d"
                names = [name for name in dispatch.implementations(family, device)
                         if _loads(family, op, device, name)]
                results = {}
                for name in names:
                    use_implementation(family, name)
                    if name == "reference" and family != "masked_conv":
                        # the reference's F.conv1d/conv2d would take the direct kernels through
                        # op masked_conv/conv2d: pin that to im2col too
                        os.environ["GMCORE_KERNELS"] += ",masked_conv=reference"
                        dispatch.reset()
                    run, grad_of = _gm_runner(spec, x, ws, device)
                    sync = (lambda: gm.cuda.synchronize()) if device == "cuda" else (lambda: None)
                    results[name] = _bench(run, grad_of, device, args, heavy, sync, gm.no_grad)
                if torch is not None:
                    if device == "cpu":
                        torch.set_num_threads(os.cpu_count() or 1)
                    run, grad_of = _torch_runner(torch, spec, x, ws, device)
                    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
                    peer = "torch cuDNN" if device == "cuda" else "torch eager"
                    results[peer] = _bench(run, grad_of, device, args, heavy, sync, torch.no_grad)
                for name, stats in results.items():
                    for mode in ("fwd", "bwd", "fwd+bwd"):
                        rows.append(row(family, name, mode, f"{device} {label}", stats[mode],
                                        bytes_moved=_bytes(spec, x, ws, mode), note="float32"))
        # WaveNet generation: the per-layer queues against recomputing the receptive field
        gen = [r for device in devices(args.device) for r in generation_rows(args, device)]
    report(rows + gen, "masked_conv", args)
    print()
    for r in gen:
        print(f"{r['size']}: {r['implementation']} {r['note']}")
    return rows + gen


if __name__ == "__main__":
    main()
