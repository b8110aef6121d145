"""Engine benchmark: per-op overhead, an MLP training step and conv2d, gmcore vs torch (CPU).

    python benchmarks/bench_engine.py [--repeats 30] [--rounds 3] [--threads N]

Prints a markdown table and writes benchmarks/results/engine_<machine>.json and .md. Each figure is
the median (with p20/p80) of ``--repeats`` timed runs after warm-up, in a process of its own per
implementation, then the median over ``--rounds`` alternating rounds. torch is used only as a peer
when it is installed (the ``bench`` extra); it is never needed by gmcore itself.
Targets (2-core CPU): per-op overhead <= 3x torch, MLP step <= 1.5x torch, conv2d <= 3x torch.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gmcore as gm
import gmcore.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, repeats, inner=1, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    t = np.array(times)
    return float(np.median(t)), float(np.percentile(t, 20)), float(np.percentile(t, 80))


def make_cases(lib, F):
    """The benchmark cases for ``lib`` (gmcore or torch: the same API names serve both)."""
    lib.manual_seed(0)
    a, b = lib.randn(8, 8), lib.randn(8, 8)
    ag = a.clone().requires_grad_()
    x = lib.randn(128, 512)
    y = lib.randint(0, 10, (128,))
    ws = [(lib.randn(o, 512) * 0.04).requires_grad_() for o in (512, 512, 10)]
    bs = [lib.zeros(o, requires_grad=True) for o in (512, 512, 10)]
    img = lib.randn(32, 64, 32, 32)
    wc = (lib.randn(64, 64, 3, 3) * 0.05).requires_grad_()

    def mlp_step():
        h = F.relu(F.linear(x, ws[0], bs[0]))
        h = F.relu(F.linear(h, ws[1], bs[1]))
        loss = F.cross_entropy(F.linear(h, ws[2], bs[2]), y)
        for p in ws + bs:
            p.grad = None
        loss.backward()
        with lib.no_grad():
            for p in ws + bs:
                p.sub_(0.01 * p.grad)

    def conv_step():
        wc.grad = None
        F.conv2d(img, wc, padding=1).sum().backward()

    return {
        ("add 8x8", "overhead"): (lambda: a + b, 200),
        ("matmul 8x8", "overhead"): (lambda: a @ b, 200),
        ("sum 8x8", "overhead"): (lambda: a.sum(), 200),
        ("add 8x8 (grad)", "overhead"): (lambda: ag + b, 200),
        ("mlp step 128x512", "train"): (mlp_step, 1),
        ("conv2d 32x64x32x32 3x3 fwd+bwd", "train"): (conv_step, 1),
    }


TARGETS = {"overhead": 3.0, "train": 1.5}
TARGET_OVERRIDES = {"conv2d 32x64x32x32 3x3 fwd+bwd": 3.0}


def run_impl(impl, repeats, threads):
    """Time every case of one implementation (run in its own process: see main)."""
    if impl == "gmcore":
        label, cases = "gmcore", make_cases(gm, F)
    else:
        import torch
        if threads:
            torch.set_num_threads(threads)
        label, cases = f"torch {torch.__version__}", make_cases(torch, torch.nn.functional)
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    rows = []
    for (name, kind), (fn, inner) in cases.items():
        med, p20, p80 = timeit(fn, repeats, inner)
        rows.append(dict(case=name, kind=kind, implementation=label, median_s=med, p20_s=p20,
                         p80_s=p80, machine=machine))
        print(f"{label:20s} {name:34s} {med * 1e6:12.1f} us", file=sys.stderr)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of gmcore and torch processes (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--impl", choices=["gmcore", "torch"], default=None,
                   help=argparse.SUPPRESS)  # internal: one implementation, rows as JSON
    args = p.parse_args(argv)
    if args.impl:
        print(json.dumps(run_impl(args.impl, args.repeats, args.threads)))
        return 0

    # Each implementation runs in its own process: torch's OpenMP pool and NumPy's BLAS
    # threads fight for the cores when they share one, which slows both.
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    impls = ["gmcore"]
    if importlib.util.find_spec("torch") is not None:
        impls.append("torch")
    else:
        print("torch not installed: gmcore figures only (pip install .[bench] for the peer)")
    # Rounds alternate the implementations so that drifting machine load (these machines are
    # shared) hits both alike; each figure is the median over rounds of per-round medians.
    runs = {}
    for _ in range(args.rounds):
        for impl in impls:
            cmd = [sys.executable, __file__, "--impl", impl, "--repeats", str(args.repeats)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            for r in json.loads(out.strip().splitlines()[-1]):
                runs.setdefault((r["case"], r["implementation"]), []).append(r)
    rows = []
    for group in runs.values():
        row = dict(group[0])
        for key in ("median_s", "p20_s", "p80_s"):
            row[key] = float(np.median([r[key] for r in group]))
        row["rounds"] = len(group)
        rows.append(row)

    by = {(r["case"], r["implementation"].split()[0]): r["median_s"] for r in rows}
    lines = ["| case | gmcore | torch | ratio | target | met |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["implementation"] != "gmcore":
            continue
        t = by.get((r["case"], "torch"))
        target = TARGET_OVERRIDES.get(r["case"], TARGETS[r["kind"]])
        if t:
            ratio = r["median_s"] / t
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | {_fmt(t)} | {ratio:.2f}x | "
                         f"<= {target}x | {'yes' if ratio <= target else 'no'} |")
        else:
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | - | - | <= {target}x | - |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"engine_{machine}"
    _atomic_write(stem.with_suffix(".json"), json.dumps(rows, indent=1))
    _atomic_write(stem.with_suffix(".md"), f"# bench_engine on {machine}\n\n{table}\n")
    return 0


def _fmt(seconds):
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _atomic_write(path, text):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
