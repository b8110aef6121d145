"""Data-parallel step time against the number of ranks, with the communication separated.

    python benchmarks/bench_distributed.py [--steps 60] [--ranks 1,2] [--batch-size 128] [--no-save]

Each (model, ranks) is a `gmcore train` run of its own under `mpiexec -n R` (R = 1: a plain
run); the figures are the medians over the log rows after the first of `sec_per_step` and, with
R > 1, `comm_sec_per_step` (the time spent averaging gradients: bucketed all-reduces, rank 0's
clock). `--batch-size` is the global batch, so more ranks split the same work (strong scaling).

Then, on paper: the expected efficiency at 8 and 64 ranks from the measured per-step message
size (every trainable parameter once per optimizer update, float32) under a ring all-reduce,
2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency, for two typical interconnects, with the
compute per rank taken as the one-rank step time divided by N (strong) or unchanged (weak
scaling: the per-rank batch fixed). Prints a markdown table and writes
``benchmarks/results/distributed_<machine>.{json,md}``.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = {"vae --arch conv": ["vae", "--arch", "conv"], "dcgan": ["dcgan"]}
# (name, bandwidth in bytes/s, latency in s): typical figures, not measured here
INTERCONNECTS = [("10 GbE", 1.25e9, 20e-6), ("InfiniBand HDR 200 Gb/s", 25e9, 2e-6)]


def _mpiexec():
    return shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))


def message_bytes(model_args) -> int:
    """Bytes all-reduced per training step: every trainable parameter of every optimizer, once."""
    import gmcore.models as zoo
    from gmcore import configs
    from gmcore.models.base import DataInfo
    from gmcore.train import TrainConfig

    spec = zoo.get(model_args[0])
    flags = dict(zip(model_args[1::2], model_args[2::2]))
    mcfg = configs.from_mapping(spec.config_cls, {k.lstrip("-").replace("-", "_"): v for k, v in flags.items()})
    model = spec.cls(mcfg, DataInfo((1, 8, 8), 17, "digits", 10))
    own = getattr(model, "configure_optimizers", None)
    opts = own(TrainConfig()) if own else None
    params = [p for o in opts.values() for g in o.param_groups for p in g["params"]] if opts else \
        [p for p in model.parameters() if p.requires_grad]
    return sum(p.data.size * 4 for p in params)


def run(model_args, ranks, steps, batch, log_every):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "gmcore", "train", *model_args, "--steps", str(steps), "--batch-size",
               str(batch), "--log-every", str(log_every), "--eval-every", "0", "--ckpt-every", "0",
               "--num-samples", "0", "--no-sample-quality", "--no-progress", "--out", f"{tmp}/run"]
        if ranks > 1:
            cmd = [_mpiexec(), "-n", str(ranks), *cmd]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        rows = [json.loads(line) for line in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["split"] == "train"][1:]   # the first row holds the warm-up
    step = statistics.median(r["sec_per_step"] for r in rows)
    comm = statistics.median(r.get("comm_sec_per_step", 0.0) for r in rows)
    return step, comm


def projection(step1, nbytes, ranks):
    """Efficiency (ideal time / expected time) at ``ranks`` for each interconnect."""
    out = {}
    for name, bandwidth, latency in INTERCONNECTS:
        comm = 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency
        strong = (step1 / ranks) / (step1 / ranks + comm)
        weak = step1 / (step1 + comm)
        out[name] = {"comm_ms": comm * 1e3, "strong": strong, "weak": weak}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    results = []
    for label, model_args in MODELS.items():
        nbytes = message_bytes(model_args)
        times = {r: run(model_args, r, args.steps, args.batch_size, args.log_every) for r in ranks}
        step1 = times[min(ranks)][0] * min(ranks)
        results.append({"model": label, "message_bytes": nbytes,
                        "ranks": {r: {"sec_per_step": s, "comm_sec_per_step": c} for r, (s, c) in times.items()},
                        "projection": {n: projection(step1, nbytes, n) for n in (8, 64)}})
    lines = [f"Data-parallel step time (global batch {args.batch_size}, {os.cpu_count()} cores, "
             f"{platform.machine()}), `python benchmarks/bench_distributed.py`", "",
             "| model | ranks | step (ms) | of which gradient all-reduce (ms) | speed-up | message (KiB) |",
             "|---|---|---|---|---|---|"]
    for res in results:
        base = res["ranks"][min(ranks)]["sec_per_step"]
        for r, t in res["ranks"].items():
            lines.append(f"| {res['model']} | {r} | {t['sec_per_step'] * 1e3:.1f} | "
                         f"{t['comm_sec_per_step'] * 1e3:.2f} | {base / t['sec_per_step']:.2f}x | "
                         f"{res['message_bytes'] / 1024:.0f} |")
    lines += ["", "Expected efficiency on paper (ring all-reduce of the message each step; strong: the "
              "global batch fixed, weak: the per-rank batch fixed):", "",
              "| model | ranks | interconnect | all-reduce (ms) | strong | weak |", "|---|---|---|---|---|---|"]
    for res in results:
        for n, per in res["projection"].items():
            for name, p in per.items():
                lines.append(f"| {res['model']} | {n} | {name} | {p['comm_ms']:.3f} | {p['strong']:.0%} | "
                             f"{p['weak']:.0%} |")
    text = "\n".join(lines)
    print(text)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"distributed_{platform.machine()}-{os.cpu_count()}cpu"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1))
        stem.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
