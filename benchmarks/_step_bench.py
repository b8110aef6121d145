"""The driver shared by the model-step benchmarks (bench_glow.py, bench_vqvae.py, bench_dcgan.py): one training
step of a model, gmcore against a torch transcription, each implementation in a process of its
own, in alternating rounds; the figure is the median over rounds of the median of ``--repeats``
timed calls. A script describes its step with a :class:`StepBench` and calls :func:`main`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
IMPLS = ("gmcore", "gmcore-reference", "torch")


@dataclass
class StepBench:
    name: str                     # results stem: benchmarks/results/<name>_<machine>.{json,md}
    title: str                    # the line printed above the table
    script: str                   # the benchmark's __file__ (re-run for each child process)
    sizes: dict                   # size name -> the tuple run_gmcore / run_torch receive
    small: dict                   # the --small sizes
    run_gmcore: Callable          # (size, device, repeats, warmup) -> timing dict
    run_torch: Callable
    describe: Callable            # size tuple -> (row fields, label for the table)
    reference_kernels: str        # GMCORE_KERNELS of the gmcore-reference process
    repeats: int = 20
    warmup: int = 3


def gmcore_sync(device):
    """What waits for gmcore's queued work on ``device`` (CuPy's current stream; nothing on the CPU)."""
    if device == "cuda":
        import cupy
        return lambda: cupy.cuda.get_current_stream().synchronize()
    return lambda: None


def torch_sync(device):
    import torch
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def time_call(call, sync, repeats, warmup) -> dict:
    """Median, p20 and p80 (ms) of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    sync()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        sync()
        t.append(time.perf_counter() - t0)
    return {"median_ms": float(np.median(t) * 1e3), "p20_ms": float(np.percentile(t, 20) * 1e3),
            "p80_ms": float(np.percentile(t, 80) * 1e3)}


def _child(bench, args):
    size = {**bench.sizes, **bench.small}[args.size]
    if args.impl == "torch":
        import torch

        torch.set_num_threads(args.threads)
        res = bench.run_torch(size, args.device, args.repeats, args.warmup)
    else:
        res = bench.run_gmcore(size, args.device, args.repeats, args.warmup)
    print(json.dumps(res))


def _devices(choice):
    if choice != "all":
        return [choice]
    import gmcore as gm

    return ["cpu"] + (["cuda"] if gm.cuda.is_available() else [])


def _parser(bench, description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--repeats", type=int, default=bench.repeats, help="timed calls per process")
    p.add_argument("--warmup", type=int, default=bench.warmup, help="untimed calls before timing")
    p.add_argument("--rounds", type=int, default=3, help="processes per (size, implementation)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--small", action="store_true", help="tiny sizes, one round: a smoke run")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    return p


def main(bench: StepBench, description: str, argv=None) -> None:
    args = _parser(bench, description).parse_args(argv)
    if args.impl:
        return _child(bench, args)
    try:
        import torch  # noqa: F401
        impls = list(IMPLS)
    except ImportError:
        impls = [i for i in IMPLS if i != "torch"]
        print("torch not installed: gmcore only (pip install torch for the peer)")
    sizes = bench.small if args.small else bench.sizes
    rounds = 1 if args.small else args.rounds
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
               OPENBLAS_NUM_THREADS=str(args.threads))
    env.pop("GMCORE_KERNELS", None)
    results = {}
    for device in _devices(args.device):
        for _ in range(rounds):
            for size in sizes:
                for impl in impls:
                    e = dict(env, GMCORE_KERNELS=bench.reference_kernels) \
                        if impl == "gmcore-reference" else env
                    out = subprocess.run(
                        [sys.executable, bench.script, "--impl", impl, "--size", size,
                         "--device", device, "--repeats", str(args.repeats), "--warmup",
                         str(args.warmup), "--threads", str(args.threads)],
                        capture_output=True, text=True, env=e)
                    if out.returncode:
                        raise SystemExit(f"{impl} {size} on {device} failed:\n{out.stderr[-3000:]}")
                    results.setdefault((device, size, impl), []).append(
                        json.loads(out.stdout.splitlines()[-1]))
    _report(bench, args, results)


def _report(bench, args, results):
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    lines = ["| device | size | implementation | fwd+bwd ms | p20-p80 ms | vs torch |",
             "|---|---|---|---|---|---|"]
    rows = []
    for (device, size, impl), runs in results.items():
        med = float(np.median([r["median_ms"] for r in runs]))
        lo = float(np.median([r["p20_ms"] for r in runs]))
        hi = float(np.median([r["p80_ms"] for r in runs]))
        t = results.get((device, size, "torch"))
        ratio = med / float(np.median([r["median_ms"] for r in t])) if t else None
        fields, label = bench.describe({**bench.sizes, **bench.small}[size])
        rows.append({"device": device, "size": size, **fields, "implementation": impl,
                     "median_ms": med, "p20_ms": lo, "p80_ms": hi, "ratio_vs_torch": ratio})
        lines.append(f"| {device} | {size} ({label}) | {impl} | {med:.2f} | {lo:.2f}-{hi:.2f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} |")
    table = "\n".join(lines)
    print(f"{bench.title}, {args.threads} threads, {machine}\n")
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        doc = {"machine": machine, "threads": args.threads, "rows": rows}
        for suffix, text in ((".json", json.dumps(doc, indent=1)), (".md", table + "\n")):
            tmp = RESULTS / f".{bench.name}_{machine}{suffix}.tmp"
            tmp.write_text(text)
            tmp.replace(RESULTS / f"{bench.name}_{machine}{suffix}")
