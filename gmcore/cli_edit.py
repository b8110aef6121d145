"""``gmcore edit RUN``: SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing
with Stochastic Differential Equations") with a trained diffusion run.

An image is noised to time ``strength * T`` of the run's forward process and denoised from there
by the run's sampler: a low strength keeps the image, a high one keeps only its coarse layout. The
inputs are image files (``--input a.png --input b.png``; converted to the run's channels, resized
to its size, rounded to its levels) or the first N test images of the run's data set
(``--from-test N``). It writes a grid, inputs on the top row and their edits below, and prints
a JSON summary; with ``--from-test`` on digits the summary says how often the digits classifier
reads an edit as its input's label (``class_kept``, beside ``class_kept_inputs``, the same for
the unedited inputs).

    gmcore edit runs/ddpm --from-test 16 --strength 0.5
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .cli import CLIError, command
from .cli_train import (_model_options, _resolve_ckpt, _run_dataset, _run_model_class, _with_model_options,
                        require_device)

__all__ = []


def _edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a diffusion run: RUN_DIR, or its checkpoint RUN_DIR/last")
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help, with the run's model's sampling options when RUN is given")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--input", action="append", default=[], metavar="IMAGE",
                   help="an image file to edit (repeat for several)")
    p.add_argument("--from-test", type=int, default=0, metavar="N",
                   help="edit the first N images of the run's test split")
    p.add_argument("--strength", type=float, default=0.5,
                   help="how far to noise, as a fraction of the T steps, in (0, 1] (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--out", default="", help="FILE.png (default: edit_<seed>.png in the run folder)")


def _edit_parser(model_cls=None) -> argparse.ArgumentParser:
    from .cli import ArgumentParser

    p = ArgumentParser(prog="gmcore edit", add_help=False, description=_HELP)
    _edit_arguments(p)
    return _with_model_options(p, model_cls, "SampleOptions", "sampling options")


_HELP = "SDEdit: noise images to a time t and denoise them with a trained diffusion run"


def _file_images(paths, model):
    """The image files as the run's data: (N, C, H, W) float32 in [0, 1] on the run's levels."""
    from .data.image_folder import read_image

    C, H, W = (int(v) for v in model.data.shape)
    if C not in (1, 3):
        raise CLIError(f"the run's images have {C} channels; --input reads grey or RGB files")
    levels = model.data.num_levels
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise CLIError(f"--input {path}: no such file")
        a = read_image(path, size=(H, W), mode="L" if C == 1 else "RGB").astype(np.float64) / 255.0
        images.append(np.round(a * (levels - 1)) / (levels - 1))
    return np.stack(images).astype(np.float32), None


def _test_images(n, model, state):
    test = _run_dataset(model, state, "test")
    if n > len(test):
        raise CLIError(f"--from-test {n}: the test split has {len(test)} images")
    arrays = test.arrays
    x = arrays[0][:n] / (test.num_levels - 1)
    labels = arrays[1][:n] if len(arrays) > 1 else None
    return x.astype("float32"), labels


@command("edit", help=_HELP, add_arguments=_edit_arguments, extra_flags=True)
def _edit(args: argparse.Namespace) -> int:
    from . import creation
    from .autograd import no_grad
    from .plots import save_image_grid
    from .random import Generator
    from .train import load_run_model

    if args.help:
        _edit_parser(_run_model_class(args.checkpoint) if args.checkpoint else None).print_help()
        return 0
    if not args.checkpoint:
        _edit_parser().error("the following arguments are required: checkpoint")
    if bool(args.input) == bool(args.from_test):
        raise CLIError("give the images to edit: --input IMAGE (repeatable) or --from-test N", status=2)
    if args.from_test < 0:
        raise CLIError("--from-test must be positive", status=2)
    if not 0.0 < args.strength <= 1.0:
        raise CLIError(f"--strength must be in (0, 1], got {args.strength}", status=2)
    require_device(args.device)
    ckpt = _resolve_ckpt(args.checkpoint)
    model, state = load_run_model(ckpt, device=args.device)
    if not hasattr(model, "edit"):
        raise CLIError(f"{args.checkpoint} is a {state['model_name']} run; SDEdit needs a diffusion run "
                       "(e.g. gmcore train ddpm)")
    options = _model_options(model, getattr(args, "extra", []), "SampleOptions", _edit_parser)
    x, labels = _file_images(args.input, model) if args.input else _test_images(args.from_test, model, state)
    gen = Generator(device=args.device).manual_seed(args.seed)
    with no_grad():
        edited = model.edit(creation.tensor(x, device=args.device), args.strength, generator=gen, **options)
    edited = edited.cpu().numpy()
    out = args.out or str(ckpt.parent / f"edit_{args.seed}.png")
    if not out.endswith(".png"):
        raise CLIError(f"--out {out}: edit writes a PNG grid", status=2)
    save_image_grid(np.concatenate([x, edited]), out, nrow=len(x))
    summary = {"edited": len(x), "strength": args.strength, "out": out,
               "mean_abs_change": float(np.abs(edited - x).mean())}
    if labels is not None and state["data"]["name"] == "digits":
        from .feature_metrics import DigitsFeatures
        net = DigitsFeatures.get()
        summary.update(class_kept=net.accuracy(edited, labels), class_kept_inputs=net.accuracy(x, labels))
    print(json.dumps(summary, indent=1))
    return 0
