"""Benchmark of the vq family: ``F.vq_nearest`` (nearest code + gather, and its backward).

    python benchmarks/bench_vq.py [--device cpu|cuda|all] [--small] [--no-save] [--repeats 20]

Every available implementation runs through the public op (``GMCORE_KERNELS=vq=<name>``), so the
figures include the gather and the fused backward (scatter-add of the gradient into the code
rows). Peers: torch eager written the straightforward way (``cdist`` + ``argmin`` + indexing),
plus ``torch.compile`` of it on GPU. Size: N=65536 rows, D=64, K=1024 codes, float32.

Extra memory (beyond inputs and outputs) is reported in the ``note`` column: the fused kernels
keep O(K*D + K) (packed codebook, norms); the reference a 4096 x K chunk of scores; torch's cdist
the full N x K matrix.
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
from gmcore import dispatch  # noqa: E402

FAMILY = "vq"


def _mib(nbytes):
    return f"{nbytes / 2**20:.1f} MiB"


def extra_memory(name, n, k, d, itemsize):
    if name == "reference":
        return _mib(min(n, 4096) * k * itemsize + k * itemsize) + " (4096 x K score chunk)"
    if name.startswith("torch"):
        return _mib(n * k * itemsize) + " (N x K cdist matrix)"
    if name == "cpp":
        return _mib((-(-k // 32) * 32) * (d + 1) * itemsize) + " (packed codebook + norms)"
    if name == "numba":
        return _mib(k * (d + 1) * itemsize) + " (-2*codebook + norms)"
    return _mib(k * itemsize) + " (norms)"


def gm_cases(device, name, z, c, g):
    zt = gm.tensor(z, device=device)
    cb = gm.tensor(c, device=device, requires_grad=True)
    gt = gm.tensor(g, device=device)

    def fwd():
        with gm.no_grad():
            return F.vq_nearest(zt, cb)

    state = {}

    def prepare():
        state["q"] = F.vq_nearest(zt, cb)[1]

    def bwd():
        state["q"].backward(gt, retain_graph=True)
        cb.grad = None

    def fwd_bwd():
        F.vq_nearest(zt, cb)[1].backward(gt)
        cb.grad = None

    return fwd, prepare, bwd, fwd_bwd


def torch_cases(torch, device, z, c, g, compile_=False):
    tdev = "cuda" if device == "cuda" else "cpu"
    zt = torch.from_numpy(z).to(tdev)
    cb = torch.from_numpy(c).to(tdev).requires_grad_()
    gt = torch.from_numpy(g).to(tdev)

    def nearest(zz, cc):
        idx = torch.cdist(zz, cc).argmin(1)
        return idx, cc[idx]

    if compile_:
        nearest = torch.compile(nearest)
    state = {}

    def fwd():
        with torch.no_grad():
            return nearest(zt, cb)

    def prepare():
        state["q"] = nearest(zt, cb)[1]

    def bwd():
        state["q"].backward(gt, retain_graph=True)
        cb.grad = None

    def fwd_bwd():
        nearest(zt, cb)[1].backward(gt)
        cb.grad = None

    return fwd, prepare, bwd, fwd_bwd


def main(argv=None):
    args = parse_args(FAMILY, argv)
    n, k, d = (2048, 128, 16) if args.small else (65536, 1024, 64)
    repeats = 3 if args.small else args.repeats
    warmup = 1 if args.small else args.warmup
    size = f"N={n} D={d} K={k} f32"
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    g = rng.standard_normal((n, d)).astype(np.float32)
    item = 4
    bytes_fwd = (n * d + k * d) * item + n * 8 + n * d * item  # read z, codebook; write idx, q
    bytes_bwd = n * d * item + n * 8 + k * d * item  # read grad, idx; write grad_codebook
    modes = (("fwd", bytes_fwd), ("bwd", bytes_bwd), ("fwd+bwd", bytes_fwd + bytes_bwd))
    rows = []
    torch = torch_or_none()
    with kernels_env_restored():
        for device in devices(args.device):
            for name in dispatch.implementations(FAMILY, device):
                use_implementation(FAMILY, name)
                try:
                    dispatch.get(FAMILY, "nearest", device)
                except dispatch.KernelUnavailable as exc:
                    print(f"skip {name} on {device}: {exc}", file=sys.stderr)
                    continue
                fwd, prepare, bwd, fwd_bwd = gm_cases(device, name, z, c, g)
                note = "extra " + extra_memory(name, n, k, d, item)
                for (mode, nbytes), fn in zip(modes, (fwd, bwd, fwd_bwd)):
                    if mode == "bwd":
                        prepare()
                    stats = measure(fn, device=device, repeats=repeats, warmup=warmup)
                    rows.append(row(FAMILY, name, mode, size, stats, bytes_moved=nbytes, note=f"{device}; {note}"))
            os.environ.pop("GMCORE_KERNELS", None)
            dispatch.reset()
            if torch is not None:
                peers = [("torch", False)] + ([("torch.compile", True)] if device == "cuda" else [])
                for pname, comp in peers:
                    fwd, prepare, bwd, fwd_bwd = torch_cases(torch, device, z, c, g, compile_=comp)
                    note = f"{device}; extra " + extra_memory("torch", n, k, d, item)
                    for (mode, nbytes), fn in zip(modes, (fwd, bwd, fwd_bwd)):
                        if mode == "bwd":
                            prepare()
                        stats = measure(fn, device=device, repeats=repeats, warmup=warmup)
                        rows.append(row(FAMILY, pname, mode, size, stats, bytes_moved=nbytes, note=note))
    report(rows, FAMILY, args)
    for r in rows:
        if r["mode"] == "fwd+bwd":
            print(f"  {r['implementation']:>13} {r['note']}")
    return rows


if __name__ == "__main__":
    main()
