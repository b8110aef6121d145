"""``gmcore dream RUN --class K``: score distillation sampling (Poole et al. 2022, DreamFusion's
core) with a trained diffusion run as the frozen prior (:mod:`gmcore.dream`).

RUN is a class-conditional ``ddpm`` run (``gmcore train ddpm --class-cond``) dreamt with
``--class K``, or a text-conditional ``glide-core`` run dreamt with ``--prompt "..."``. A small
voxel grid of density and intensity (``--representation voxels``) or, as the sanity baseline,
an image (``--representation image``) is optimised so that its views from random azimuths in
[-range, range] look like the condition to the prior. It writes into ``--out``: ``views.png``
(the views at ``--eval-views`` azimuths across the range), ``views.gif`` (the same, animated),
``scene.npz`` and ``metrics.json``, with, on digits, ``class_rate``: the fraction of those views
the digits classifier reads as K.

    gmcore dream runs/ddpm-cc --class 3 --out dream3
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .cli import CLIError, command
from .cli_train import _resolve_ckpt, _run_dataset, require_device

__all__ = []

_HELP = "score distillation (DreamFusion's core): a voxel grid whose views a diffusion run reads as --class K"


def _dream_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint",
                   help="a class-conditional ddpm run (or a glide-core run): RUN_DIR or RUN_DIR/last")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--class", dest="label", type=int, default=None, metavar="K",
                      help="the class to dream of (class-conditional runs)")
    what.add_argument("--prompt", default=None, help="the caption to dream of (text-conditional runs)")
    p.add_argument("--out", required=True,
                   help="output folder (views.png, views.gif, scene.npz, metrics.json)")
    p.add_argument("--representation", choices=["voxels", "image"], default="voxels",
                   help="voxels: a density and intensity grid, volume-rendered; image: the pixels "
                        "themselves (the sanity baseline) (default voxels)")
    p.add_argument("--steps", type=int, default=200, help="Adam steps (default 200)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate on the logits (default 0.05)")
    p.add_argument("--guidance", type=float, default=10.0,
                   help="classifier-free guidance w, eps = (1 + w) eps(x, y) - w eps(x) (DreamFusion's "
                        "omega = 1 + w; it uses 100; w = 7 and 20 gave the same class rates on digits) "
                        "(default 10)")
    p.add_argument("--views", type=int, default=4, help="random azimuths rendered per step (default 4)")
    p.add_argument("--azimuth-range", type=float, default=30.0,
                   help="azimuths are drawn from [-range, range] degrees (default 30)")
    p.add_argument("--eval-views", type=int, default=13,
                   help="views evenly across the range that are written and classified (default 13)")
    p.add_argument("--depth", type=int, default=0, help="voxels along the depth axis (0: the image width)")
    p.add_argument("--background", type=float, default=None,
                   help="the value of empty space in the data's [0, 1] (default: the median border "
                        "pixel of the run's test images; 0 for digits)")
    p.add_argument("--t-min", type=float, default=0.02, help="smallest t / T drawn (default 0.02)")
    p.add_argument("--t-max", type=float, default=0.98, help="largest t / T drawn (default 0.98)")
    p.add_argument("--weighting", choices=["sigma2", "uniform"], default="sigma2",
                   help="w(t): sigma2 = 1 - abar_t (DreamFusion) or uniform (default sigma2)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the scene, azimuths, t and noise, all drawn on the host (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines (0: none) (default 50)")


def _background(model, state) -> float:
    """The data's empty-space value: the median border pixel of the run's test images."""
    test = _run_dataset(model, state, "test")
    x = np.asarray(test.arrays[0][:500], dtype=np.float64) / (test.num_levels - 1)
    border = np.concatenate([x[..., 0, :].ravel(), x[..., -1, :].ravel(),
                             x[..., :, 0].ravel(), x[..., :, -1].ravel()])
    return float(np.median(border))


def _prompt_digit(prompt: str):
    """The digit a caption names (its one digit word or numeral, as gmcore.data.captions writes
    them), or None when it names none or several."""
    from .data.captions import DIGIT_WORDS

    words = prompt.lower().replace(".", " ").replace(",", " ").split()
    named = {DIGIT_WORDS.index(w) if w in DIGIT_WORDS else int(w) for w in words
             if w in DIGIT_WORDS or (w.isdigit() and len(w) == 1)}
    return named.pop() if len(named) == 1 else None


@command("dream", help=_HELP, add_arguments=_dream_arguments)
def _dream(args: argparse.Namespace) -> int:
    from .autograd import no_grad
    from .dream import DiffusionPrior, dream, eval_azimuths, save_outputs, view_accuracy
    from .dream.loop import render_views
    from .random import Generator
    from .train import load_run_model

    for name in ("steps", "views", "eval_views"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} must be positive, got {getattr(args, name)}", status=2)
    if args.lr <= 0:
        raise CLIError(f"--lr must be positive, got {args.lr}", status=2)
    if not 0.0 <= args.azimuth_range <= 180.0:
        raise CLIError(f"--azimuth-range must be in [0, 180] degrees, got {args.azimuth_range}", status=2)
    if not 0.0 <= args.t_min < args.t_max <= 1.0:
        raise CLIError(f"need 0 <= --t-min < --t-max <= 1, got {args.t_min}, {args.t_max}", status=2)
    if args.depth < 0:
        raise CLIError(f"--depth must be >= 0, got {args.depth}", status=2)
    if args.background is not None and not 0.0 <= args.background <= 1.0:
        raise CLIError(f"--background must be in [0, 1] (the data's range), got {args.background}", status=2)
    require_device(args.device)
    ckpt = _resolve_ckpt(args.checkpoint)
    model, state = load_run_model(ckpt, device=args.device)
    try:
        prior = DiffusionPrior(model, label=args.label, prompt=args.prompt, guidance=args.guidance)
    except ValueError as exc:
        raise CLIError(f"{args.checkpoint}: {exc}", status=2) from None
    background = _background(model, state) if args.background is None else args.background
    gen = Generator().manual_seed(args.seed)      # the host's: scene, azimuths, t and noise (moved over)
    start = time.perf_counter()
    scene, history = dream(prior, representation=args.representation, steps=args.steps, lr=args.lr,
                           views=args.views, azimuth_range=args.azimuth_range, background=background,
                           depth=args.depth, t_min=args.t_min, t_max=args.t_max, weighting=args.weighting,
                           generator=gen, log_every=args.log_every)
    seconds = time.perf_counter() - start
    azimuths = eval_azimuths(args.azimuth_range, args.eval_views)
    metrics = {"run": str(ckpt.parent), "model": state["model_name"], "class": args.label,
               "prompt": args.prompt,
               "representation": args.representation, "steps": args.steps, "lr": args.lr,
               "guidance": args.guidance, "views_per_step": args.views, "azimuth_range": args.azimuth_range,
               "t_range": [args.t_min, args.t_max], "weighting": args.weighting, "background": background,
               "seed": args.seed, "seconds": round(seconds, 2), "azimuths": [float(a) for a in azimuths]}
    target = args.label if args.label is not None else _prompt_digit(args.prompt)
    if state["data"]["name"] == "digits" and target is not None:
        rate, predicted = view_accuracy(render_views(scene, azimuths), int(target))
        metrics.update(class_rate=rate, predicted=predicted)
    if hasattr(scene, "volume"):     # where the density sits along the depth axis (front first)
        with no_grad():
            density = scene.volume()[0].detach().cpu().numpy()
        metrics["density_by_depth"] = [round(float(v), 4) for v in density.sum((0, 1))]
    metrics["history"] = history
    metrics = save_outputs(Path(args.out), scene, azimuths, metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=1))
    return 0
