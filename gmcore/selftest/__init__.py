"""``gmcore selftest``: check an installation, on the CPU or a GPU, in one command.

It runs every available implementation of every kernel family against the float64
``reference`` (values and gradients, random and edge-case inputs: :mod:`.checks`), two
training steps and a sample of a few tiny models (:mod:`.models`) and, with ``--bench``, a
small timing set against torch (:mod:`.bench`). It prints a table, writes ``selftest.json``
and ``selftest.md`` to ``--out`` and returns 0 when every check passes, 1 when one fails (the
failing rows are named), 2 when the device is unusable.

>>> from gmcore import selftest
>>> rows = selftest.run("cpu", families={"logsumexp"}, models=False, quiet=True)["rows"]
>>> sorted({(r.family, r.status) for r in rows})
[('logsumexp', 'pass')]
"""
from __future__ import annotations

import time

from .report import format_table, machine_info, summarize, write

__all__ = ["run", "main", "add_arguments"]


def run(device: str = "cpu", *, bench: bool = False, out=None, quick: bool = False, families=None,
        models: bool = True, quiet: bool = False, seed: int = 0) -> dict:
    """Run the checks on ``device``; returns ``{"rows", "summary", "info", "seconds"}``.

    ``quick`` checks float32 only (float64 is the CPU reference's own dtype); ``families``
    limits the kernel checks to a set of family names.
    """
    import numpy as np

    from .checks import run_kernel_checks

    start = time.perf_counter()
    dtypes = (np.float32,) if quick else (np.float32, np.float64)
    rows = run_kernel_checks(device, seed, dtypes, families)
    if models:
        from .models import run_model_checks

        rows += run_model_checks(device, seed)
    if bench:
        from .bench import run_bench

        rows += run_bench(device, big=device == "cuda", repeats=5 if quick else 10)
    info = machine_info(device)
    summary = summarize(rows)
    seconds = time.perf_counter() - start
    if not quiet:
        print(format_table(rows))
        print()
        print(f"{summary['result']}: {summary['passed']} passed, {summary['failed']} failed, "
              f"{summary['skipped']} skipped in {seconds:.1f} s ({info['device']})")
        for name in summary["failures"]:
            print(f"  FAILED {name}")
    if out is not None:
        jpath, mpath = write(out, rows, info, summary)
        if not quiet:
            print(f"wrote {jpath} and {mpath}")
    return {"rows": rows, "summary": summary, "info": info, "seconds": seconds}


def add_arguments(p) -> None:
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device to check (default cpu)")
    p.add_argument("--bench", action="store_true", help="also time one case per family against torch")
    p.add_argument("--out", default=None, metavar="DIR", help="write selftest.json and selftest.md here")
    p.add_argument("--quick", action="store_true", help="float32 checks only, fewer bench repeats")


def main(args) -> int:
    """The ``gmcore selftest`` command: exit 0 all pass, 1 any failure, 2 no usable device."""
    import sys

    if args.device == "cuda":
        import gmcore as gm

        if not gm.cuda.is_available():
            print("gmcore selftest: --device cuda, but no CUDA device is usable here "
                  "(cupy missing or no GPU visible; `gmcore info` says which)", file=sys.stderr)
            return 2
    try:
        result = run(args.device, bench=args.bench, out=args.out, quick=args.quick)
    except (NotADirectoryError, PermissionError, FileExistsError) as exc:
        print(f"gmcore selftest: cannot write --out: {exc}", file=sys.stderr)
        return 2
    return 0 if result["summary"]["result"] == "PASS" else 1
