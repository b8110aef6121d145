"""Run every kernel benchmark (``benchmarks/bench_<family>.py``) and print their summaries.

Each script runs in a subprocess of its own (a clean process: no JIT, thread pool or dispatch
state leaks between families), with the same flags passed through::

    python benchmarks/run.py --device cpu --repeats 20
    python benchmarks/run.py --small --no-save          # smoke run of every family

``bench_engine.py`` and ``bench_train.py`` are not kernel benchmarks and are skipped. A family
that fails is reported (with the tail of its stderr) and the others still run; the exit
status is non-zero when any failed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"bench_engine.py", "bench_train.py"}


def scripts() -> list[Path]:
    """The kernel benchmark scripts present, sorted by family name."""
    return sorted(p for p in HERE.glob("bench_*.py") if p.name not in SKIP)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="run every benchmarks/bench_<family>.py")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--small", action="store_true")
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--only", nargs="*", default=None, metavar="FAMILY",
                   help="run only these families (e.g. --only dlml vq)")
    return p.parse_args(argv)


def passthrough(args) -> list[str]:
    """The flags every family script receives."""
    out = []
    if args.device is not None:
        out += ["--device", args.device]
    if args.repeats is not None:
        out += ["--repeats", str(args.repeats)]
    if args.small:
        out.append("--small")
    if args.no_save:
        out.append("--no-save")
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    flags = passthrough(args)
    found = scripts()
    if args.only:
        found = [p for p in found if p.stem[len("bench_"):] in set(args.only)]
    if not found:
        print("no benchmark scripts found", file=sys.stderr)
        return 1
    summaries, failed = [], []
    for script in found:
        family = script.stem[len("bench_"):]
        print(f"## {family}: {script.name} {' '.join(flags)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), *flags], capture_output=True, text=True,
                              cwd=str(HERE.parent))
        took = time.perf_counter() - t0
        if proc.returncode != 0:
            failed.append(family)
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            summaries.append(f"## {family}\n\nFAILED (exit {proc.returncode}, {took:.1f} s)\n\n```\n{tail}\n```")
            continue
        table = "\n".join(line for line in proc.stdout.splitlines() if line.startswith("|"))
        summaries.append(f"## {family} ({took:.1f} s)\n\n{table or proc.stdout.strip()}")
    print("\n\n".join(summaries))
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
