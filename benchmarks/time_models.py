"""Time the README's model table: each row's exact command, one after another, on this machine.

    python benchmarks/time_models.py                      # every row (about half an hour on 2 cores)
    python benchmarks/time_models.py --only vae pixelcnn  # rows whose model is named
    python benchmarks/time_models.py --steps 3 --no-save  # smoke run: every command, 3 steps
    python benchmarks/time_models.py --only glow --keep runs/timed   # keep the run folders

Method (the one the README's "time" column states): a quiet machine (nothing else running),
default threads, each command run as a user types it (``gmcore train MODEL FLAGS``, into a fresh
temporary run folder, progress bar off), one at a time. The time is the command's wall-clock
time from start to exit: data loading, training, the final test evaluation, the samples and the
sample-quality metrics, everything a user waits for. The figure is read back from the run's
``metrics.json``. Results go to ``benchmarks/results/models_<machine>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# (model, extra flags): the README's rows, in its order.
ROWS = [
    ("vae", []),
    ("vae", ["--arch", "conv"]),
    ("vqvae", []),
    ("ppca", []),
    ("dae", []),
    ("cae", []),
    ("made", ["--binarize", "none"]),
    ("pixelcnn", []),
    ("gated-pixelcnn", ["--no-conditional"]),
    ("pixelcnn++", []),
    ("gated-pixelcnn", []),
    ("made", []),
    ("char-rnn", []),
    ("char-rnn", ["--cell", "lstm"]),
    ("trigram-mlp", []),
    ("wavenet", []),
    ("wavenet", ["--output", "dlml"]),
    ("vae", ["--posterior-flow", "iaf"]),
    ("vae", ["--posterior-flow", "planar"]),
    ("vae", ["--posterior-flow", "radial"]),
    ("linear-flow", []),
    ("nice", []),
    ("realnvp", []),
    ("glow", []),
    ("maf", []),
    ("nsf", []),
    ("nsf", ["--variant", "autoregressive"]),
    ("glow", ["--dequantization", "variational"]),
    ("realnvp", ["--dequantization", "variational"]),
    ("nsf", ["--dequantization", "variational"]),
    ("nsf", ["--variant", "autoregressive", "--dequantization", "variational"]),
    ("maf", ["--dequantization", "variational"]),
    ("nice", ["--dequantization", "variational"]),
    ("linear-flow", ["--dequantization", "variational"]),
    ("planar-flow", []),
    ("radial-flow", []),
    ("vqvae2", []),
    ("delta-vae", []),
    ("delta-vae", ["--prior", "normal"]),
    ("gan", []),
    ("dcgan", []),
    ("cgan", []),
    ("acgan", []),
    ("wgan", []),
    ("wgan-gp", []),
    ("lsgan", []),
    ("hinge-gan", []),
    ("wgan-gp", ["--dataset", "8gaussians"]),
    ("gan", ["--dataset", "8gaussians", "--loss", "minimax"]),
    ("vae-gan", []),
    ("wavegan", []),
    ("ddpm", []),
    ("ddpm", ["--learn-sigma"]),
    ("ddpm", ["--class-cond"]),
    ("bit-diffusion", []),
]


def _figure(metrics: dict) -> tuple[float | None, str]:
    """(value, unit) of the run's quoted figure: the generic key when present; continuous 2-D
    densities quote nats per point."""
    if metrics.get("unit") == "nats":
        return metrics["test_nll_nats"], "nats"
    if "test_bits" in metrics:
        return metrics["test_bits"], f"bits/{metrics.get('unit', 'dim')}"
    for key, unit in (("test_bits_per_char", "bits/char"), ("test_bits_per_sample", "bits/sample"),
                      ("test_bits_per_dim", "bits/dim")):
        if key in metrics:
            return metrics[key], unit
    return None, ""


def run_row(model: str, flags: list[str], steps: int | None, work: Path) -> dict:
    out = work / (model + "".join(flags).replace("-", "_"))
    cmd = ["gmcore", "train", model, *flags]
    argv = [sys.executable, "-m", "gmcore", "train", model, *flags, "--out", str(out), "--no-progress"]
    if steps is not None:
        argv += ["--steps", str(steps), "--eval-every", "0", "--ckpt-every", "0"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    row = {"command": " ".join(cmd), "wall_s": round(wall, 1), "returncode": proc.returncode}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        return row
    metrics = json.loads((out / "metrics.json").read_text())
    value, unit = _figure(metrics)
    row.update(figure=value, unit=unit, nll_kind=metrics.get("nll_kind"),
               digits_fid=metrics.get("digits_fid"), steps=metrics.get("step"),
               **{k: metrics[k] for k in SAMPLE_FIGURES if k in metrics})
    return row


# what models without a likelihood (GANs) are judged by, when the run reports it
SAMPLE_FIGURES = ("label_accuracy", "modes_hit", "high_quality_share", "energy_distance")


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"Model table timings on {machine} (python benchmarks/time_models.py)", "",
             "| command | figure | digits-FID | wall |", "|---|---|---|---|"]
    for r in rows:
        if r["returncode"]:
            lines.append(f"| `{r['command']}` | failed: {r['error'][0]} | | {r['wall_s']} s |")
            continue
        fid = f"{r['digits_fid']:.1f}" if r.get("digits_fid") is not None else ""
        figure = f"{r['figure']:.3f} {r['unit']}" if r.get("figure") is not None else \
            "none (" + ", ".join(f"{k} {r[k]:.3g}" for k in SAMPLE_FIGURES if k in r) + ")"
        lines.append(f"| `{r['command']}` | {figure} | {fid} | {r['wall_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def _merge(path: Path, results: list[dict]) -> list[dict]:
    """The saved rows with this run's rows put in (a partial run replaces only its own rows),
    in the order of ROWS."""
    rows = {}
    if path.exists():
        rows = {r["command"]: r for r in json.loads(path.read_text()).get("rows", [])}
    rows.update({r["command"]: r for r in results})
    order = {" ".join(["gmcore", "train", m, *f]): i for i, (m, f) in enumerate(ROWS)}
    return sorted(rows.values(), key=lambda r: order.get(r["command"], len(order)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, metavar="MODEL", help="rows of these models only")
    p.add_argument("--with-flag", default=None, metavar="FLAG",
                   help="only rows whose flags include this one, without its dashes (e.g. posterior-flow)")
    p.add_argument("--steps", type=int, default=None, help="override the step count (smoke runs)")
    p.add_argument("--no-save", action="store_true", help="print, don't write benchmarks/results/")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="write the run folders into DIR and keep them (for gmcore eval afterwards)")
    args = p.parse_args(argv)
    rows = [r for r in ROWS if (not args.only or r[0] in args.only)
            and (args.with_flag is None or "--" + args.with_flag in r[1])]
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gmcore-time-models-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for model, flags in rows:
            r = run_row(model, flags, args.steps, work)
            results.append(r)
            print(json.dumps(r), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    table = markdown(results, machine)
    print(table)
    if not args.no_save:
        from gmcore.io import atomic_write_text

        stem = RESULTS / f"models_{machine}"
        merged = _merge(stem.with_suffix(".json"), results)
        atomic_write_text(stem.with_suffix(".json"), json.dumps(
            {"machine": machine, "python": platform.python_version(), "rows": merged}, indent=1))
        atomic_write_text(stem.with_suffix(".md"), markdown(merged, machine))
    return 1 if any(r["returncode"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
