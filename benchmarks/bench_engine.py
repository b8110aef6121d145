"""Engine benchmark: per-op overhead, an MLP training step and conv2d, gmcore vs torch (CPU).

    python benchmarks/bench_engine.py [--suite engine|ops] [--repeats 30] [--rounds 3] [--threads N]

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


def make_op_cases(lib, F):
    """``--suite ops``: forward+backward of single nn ops at model-like sizes (no targets:
    a survey of where the reference path stands, to pick what to fuse next)."""
    lib.manual_seed(0)
    x4 = lib.randn(32, 64, 32, 32, requires_grad=True)
    w_ct = (lib.randn(64, 32, 4, 4) * 0.05).requires_grad_()
    logits = lib.randn(512, 1000, requires_grad=True)
    target = lib.randint(0, 1000, (512,))
    table = lib.randn(10000, 256, requires_grad=True)
    idx = lib.randint(0, 10000, (64, 128))
    gamma, beta = lib.ones(64, requires_grad=True), lib.zeros(64, requires_grad=True)
    running_mean, running_var = lib.zeros(64), lib.ones(64)
    seq = lib.randn(64, 256, 512, requires_grad=True)
    cases = {
        "conv_transpose2d s2 k4": lambda: F.conv_transpose2d(x4, w_ct, stride=2, padding=1),
        "max_pool2d 2": lambda: F.max_pool2d(x4, 2),
        "avg_pool2d 2": lambda: F.avg_pool2d(x4, 2),
        "interpolate bilinear x2": lambda: F.interpolate(x4, scale_factor=2, mode="bilinear"),
        "group_norm 8": lambda: F.group_norm(x4, 8, gamma, beta),
        "batch_norm train": lambda: F.batch_norm(x4, running_mean, running_var, gamma, beta,
                                                 training=True),
        "layer_norm 512": lambda: F.layer_norm(seq, (512,)),
        "softmax 512x1000": lambda: F.softmax(logits, 1),
        "cross_entropy 512x1000": lambda: F.cross_entropy(logits, target),
        "embedding 64x128 of 10k": lambda: F.embedding(idx, table),
        "gelu": lambda: F.gelu(x4),
        "silu": lambda: F.silu(x4),
    }

    def fwd_bwd(f):
        def run():
            for t in (x4, w_ct, logits, table, gamma, beta, seq):
                t.grad = None
            f().sum().backward()
        return run
    return {(name, "op"): (fwd_bwd(f), 1) for name, f in cases.items()}


SUITES = {"engine": make_cases, "ops": make_op_cases}
TARGETS = {"overhead": 3.0, "train": 1.5}
TARGET_OVERRIDES = {"conv2d 32x64x32x32 3x3 fwd+bwd": 3.0}


def run_impl(impl, repeats, threads, suite="engine"):
    """Time every case of one implementation (run in its own process: see main)."""
    if impl == "gmcore":
        label, cases = "gmcore", SUITES[suite](gm, F)
    else:
        import torch
        if threads:
            torch.set_num_threads(threads)
        label, cases = f"torch {torch.__version__}", SUITES[suite](torch, torch.nn.functional)
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
    p.add_argument("--suite", choices=sorted(SUITES), default="engine",
                   help="engine: the targeted cases (default); ops: a survey of single nn ops")
    p.add_argument("--impl", choices=["gmcore", "torch"], default=None,
                   help=argparse.SUPPRESS)  # internal: one implementation, rows as JSON
    args = p.parse_args(argv)
    if args.impl:
        print(json.dumps(run_impl(args.impl, args.repeats, args.threads, args.suite)))
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
            cmd = [sys.executable, __file__, "--impl", impl, "--repeats", str(args.repeats),
                   "--suite", args.suite]
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
        target = TARGET_OVERRIDES.get(r["case"], TARGETS.get(r["kind"]))
        goal = f"<= {target}x" if target else "-"
        if t:
            ratio = r["median_s"] / t
            met = "-" if not target else "yes" if ratio <= target else "no"
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | {_fmt(t)} | {ratio:.2f}x | "
                         f"{goal} | {met} |")
        else:
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | - | - | {goal} | - |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{args.suite}_{machine}"
    _atomic_write(stem.with_suffix(".json"), json.dumps(rows, indent=1))
    _atomic_write(stem.with_suffix(".md"),
                  f"# bench_engine --suite {args.suite} on {machine}\n\n{table}\n")
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
