"""Shared machinery of the kernel benchmarks (``bench_<family>.py``, ``run.py``).

A benchmark script builds its inputs once per implementation, times three modes (forward,
backward, forward+backward) with :func:`measure`, and hands the rows to :func:`save` and
:func:`markdown`::

    from _harness import measure, row, save, markdown, machine, parse_args
    args = parse_args("dlml")
    stats = measure(fn, device="cpu", repeats=args.repeats)
    rows.append(row("dlml", "numba", "fwd+bwd", "B=16 C=3 32x32 K=10", stats, bytes_moved=...))
    save(rows, "dlml"); print(markdown(rows))

Timing: warm-up calls (JIT compiles, caches), then ``repeats`` timed calls; on CUDA each call
is bracketed by CUDA events on the current stream. Figures are the median, p20 and p80 in
milliseconds. Rows are appended to ``benchmarks/results/<family>.csv`` (one file per family,
one line per measurement, with the machine and a timestamp) so runs on different machines and
days accumulate; nothing is overwritten.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["timestamp", "machine", "family", "implementation", "mode", "size", "median_ms", "p20_ms",
          "p80_ms", "bytes_moved", "gb_per_s", "note"]


def parse_args(family: str, argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=f"benchmark the {family} kernels")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                   help="which devices to run (default: every available one)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    p.add_argument("--small", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    p.add_argument("--no-save", action="store_true", help="print only, do not append to results/")
    return p.parse_args(argv)


def devices(choice: str) -> list[str]:
    """The devices to benchmark on: ``cpu``, plus ``cuda`` when a GPU is visible."""
    import gmcore as gm

    have_cuda = gm.cuda.is_available()
    if choice == "cuda" and not have_cuda:
        raise SystemExit("--device cuda: no CUDA device visible")
    if choice == "all":
        return ["cpu"] + (["cuda"] if have_cuda else [])
    return [choice]


def machine() -> str:
    """A short machine tag: ``x86_64-2cpu`` or ``x86_64-16cpu-NVIDIA H200``."""
    tag = f"{platform.machine()}-{os.cpu_count()}cpu"
    try:
        import cupy

        if cupy.cuda.is_available():
            props = cupy.cuda.runtime.getDeviceProperties(0)
            tag += "-" + props["name"].decode()
    except Exception:  # no cupy / no GPU: a CPU machine
        pass
    return tag


def measure(fn: Callable[[], object], device: str = "cpu", repeats: int = 20, warmup: int = 3) -> dict:
    """Median / p20 / p80 of ``fn()`` wall time in ms (CUDA events on the GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        import cupy

        stream = cupy.cuda.get_current_stream()
        for _ in range(repeats):
            start, stop = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            fn()
            stop.record(stream)
            stop.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, stop))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p20_ms": float(np.percentile(t, 20)),
            "p80_ms": float(np.percentile(t, 80))}


def row(family: str, implementation: str, mode: str, size: str, stats: dict,
        bytes_moved: int | None = None, note: str = "") -> dict:
    """One result row; achieved GB/s from ``bytes_moved`` (the minimum traffic of the op)."""
    gbps = None
    if bytes_moved:
        gbps = bytes_moved / (stats["median_ms"] * 1e-3) / 1e9
    return {"timestamp": _dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "family": family, "implementation": implementation, "mode": mode, "size": size,
            **stats, "bytes_moved": bytes_moved or "", "gb_per_s": "" if gbps is None else round(gbps, 2),
            "note": note}


def save(rows: list[dict], family: str) -> Path:
    """Append ``rows`` to ``benchmarks/results/<family>.csv`` (header written once)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{family}.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    return path


def markdown(rows: list[dict], baseline: str = "reference") -> str:
    """A markdown table of ``rows``, with each time's speed-up over ``baseline`` (same mode, size)."""
    base = {(r["mode"], r["size"], r["machine"]): r["median_ms"] for r in rows
            if r["implementation"] == baseline}
    lines = ["| implementation | mode | size | median ms | p20 | p80 | GB/s | vs " + baseline + " |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base.get((r["mode"], r["size"], r["machine"]))
        speed = f"{b / r['median_ms']:.2f}x" if b else ""
        lines.append(f"| {r['implementation']} | {r['mode']} | {r['size']} | {r['median_ms']:.3f} | "
                     f"{r['p20_ms']:.3f} | {r['p80_ms']:.3f} | {r['gb_per_s']} | {speed} |")
    return "\n".join(lines)


def torch_or_none():
    """torch when installed (the ``bench`` extra), else None: it is a peer, never required."""
    try:
        import torch

        return torch
    except ImportError:
        return None


def use_implementation(family: str, name: str) -> None:
    """Route the family's public ops to implementation ``name`` (``GMCORE_KERNELS=family=name``),
    so timings include the engine's per-op overhead, as users see it."""
    from gmcore import dispatch

    os.environ["GMCORE_KERNELS"] = f"{family}={name}"
    dispatch.reset()


def cases(family: str, op: str, device: str, torch) -> list[tuple[str, str | None, bool]]:
    """``(label, implementation to select or None, torch.compile?)`` for every implementation of
    ``family`` whose ``op`` loads on ``device`` (the others are reported on stderr and skipped),
    then torch eager (and torch.compile on a GPU) when torch is installed."""
    import sys

    from gmcore import dispatch

    out = []
    for name in dispatch.implementations(family, device):
        try:
            use_implementation(family, name)
            dispatch.get(family, op, device)
        except (dispatch.KernelUnavailable, ValueError) as exc:
            print(f"skip {name} on {device}: {exc}", file=sys.stderr)
            continue
        out.append((name, name, False))
    if torch is not None and (device == "cpu" or torch.cuda.is_available()):
        out.append(("torch", None, False))
        if device == "cuda":
            out.append(("torch.compile", None, True))
    return out


@contextlib.contextmanager
def kernels_env_restored():
    """Put ``GMCORE_KERNELS`` (and the dispatch cache) back as they were on exit."""
    from gmcore import dispatch

    saved = os.environ.get("GMCORE_KERNELS")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("GMCORE_KERNELS", None)
        else:
            os.environ["GMCORE_KERNELS"] = saved
        dispatch.reset()


def report(rows: list[dict], family: str, args) -> list[dict]:
    """Append ``rows`` to the family's CSV (unless ``--no-save``) and print the markdown table."""
    if not args.no_save:
        print("saved to", save(rows, family))
    print(markdown(rows))
    return rows
