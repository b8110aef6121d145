"""How far a parallel-wavenet student is from the best it could do step by step.

    python benchmarks/parallel_wavenet_floor.py RUN [--clips 2] [--no-save]

RUN is a finished ``gmcore train parallel-wavenet`` run. The student's output at step t is one
logistic p_S(x_t | x_<t) (mean M_t, scale S_t); the teacher's is a mixture of logistics
p_T(x_t | x_<t). On the same contexts x_<t, this script finds for every step the single
logistic closest to the teacher's conditional, argmin_(mu, s) KL(logistic(mu, s) || p_T(. | x_<t))
(by quadrature on a grid of 800 points over [-1.25, 1.25], 600 Adam steps per step in
parallel), and prints, in nats per sample and bits per code bin:

* the teacher's conditional entropy on those contexts;
* that best logistic's KL and its cross-entropy under the teacher (what a student with a
  perfect network would pay on these contexts);
* the student's own KL and cross-entropy there (its (M_t, S_t), the cross-entropy estimated
  with 64 draws per step).

The contexts are ``--clips`` of the student's own samples and as many of the teacher's. A gap
between the student and the best logistic is the network's (or its training's) doing, not the
one-logistic-per-step form. Writes ``benchmarks/results/parallel_wavenet_floor.md``.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

import gmcore as gm
from gmcore.io import atomic_write_text
from gmcore.models.autoregressive._parallel_wavenet_flow import logistic_noise
from gmcore.models.autoregressive._parallel_wavenet_teacher import (continuous_outputs,
                                                                    mixture_log_density, to_axis)
from gmcore.nn import functional as F
from gmcore.train import load_run_model

GRID = np.linspace(-1.25, 1.25, 800)


def best_logistics(log_p: np.ndarray, iters: int = 600):
    """Per-step (KL, cross-entropy) in nats of the logistic closest (reverse KL) to the densities
    exp(log_p) (B, G, T) tabulated on GRID."""
    dx = GRID[1] - GRID[0]
    p = np.exp(log_p)
    mu = gm.tensor((p * GRID[None, :, None]).sum(1) * dx, requires_grad=True)   # start at the mean
    log_s = gm.tensor(np.full(mu.shape, math.log(0.05)), requires_grad=True)
    opt = gm.optim.Adam([mu, log_s], lr=0.01)
    grid, target = gm.tensor(GRID[None, :, None]), gm.tensor(log_p)
    for _ in range(iters):
        z = (grid - mu.unsqueeze(1)) * (-log_s).exp().unsqueeze(1)
        log_q = -z - 2 * F.softplus(-z) - log_s.unsqueeze(1)
        q = log_q.exp()
        kl = (q * (log_q - target)).sum(1) * dx
        opt.zero_grad()
        kl.sum().backward()
        opt.step()
    return kl.detach().numpy(), -(q.detach().numpy() * log_p).sum(1) * dx


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a finished parallel-wavenet run folder")
    ap.add_argument("--clips", type=int, default=2, help="clips of each kind of context")
    ap.add_argument("--no-save", action="store_true", help="print only")
    args = ap.parse_args(argv)

    loaded = load_run_model(Path(args.run) / "last")
    pw = (loaded[0] if isinstance(loaded, tuple) else loaded).to(dtype=gm.float64)
    T, Q = pw.data.shape[0], pw.levels
    bits = lambda nats: (nats - math.log(pw.bin_width)) / math.log(2)     # noqa: E731  per code bin
    g = gm.Generator().manual_seed(1)
    with gm.no_grad():
        z = logistic_noise((args.clips, T), g, dtype=gm.float64)
        x, mean, log_scale = pw.student(z)
        contexts = {"student samples": x, "teacher samples": to_axis(pw.base.sample(args.clips, g, length=T),
                                                                     Q, gm.float64)}
    rows = []
    for name, y in contexts.items():
        with gm.no_grad():
            params = continuous_outputs(pw.base, y)
            grid = gm.tensor(np.broadcast_to(GRID[None, :, None], (args.clips, len(GRID), T)).copy())
            log_p = mixture_log_density(params, grid).numpy()
        entropy = -(np.exp(log_p) * log_p).sum(1) * (GRID[1] - GRID[0])
        kl, ce = best_logistics(log_p)
        rows.append((name, "teacher's conditional", "", bits(entropy.mean())))
        rows.append((name, "best single logistic", kl.mean(), bits(ce.mean())))
        if name == "student samples":
            with gm.no_grad():
                draws = mean.unsqueeze(1) + log_scale.exp().unsqueeze(1) * logistic_noise(
                    (args.clips, 64, T), g, dtype=gm.float64)
                ce_s = -mixture_log_density(params, draws).mean(1).numpy()
                h_s = (log_scale + 2.0).numpy()
            rows.append((name, "the student", (ce_s - h_s).mean(), bits(ce_s.mean())))
    cfg = json.loads((Path(args.run) / "config.json").read_text())
    run = f"{cfg['train']['steps']} steps, seed {cfg['train']['seed']}"
    lines = [f"# parallel-wavenet: the student against the best single logistic per step ({run})", "",
             f"`python benchmarks/parallel_wavenet_floor.py RUN`, {args.clips} clips of {T} samples of each "
             "kind of context. KL in nats per sample; entropy / cross-entropy under the teacher in bits per "
             "code bin (the unit of the run's `student_samples_teacher_bits_per_sample`).", "",
             "| contexts | what | KL to the teacher (nats) | entropy or cross-entropy (bits) |", "|---|---|---|---|"]
    lines += [f"| {c} | {w} | {'' if k == '' else f'{k:.3f}'} | {b:.3f} |" for c, w, k, b in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        out = Path(__file__).parent / "results" / "parallel_wavenet_floor.md"
        atomic_write_text(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
