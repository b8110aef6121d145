"""``gmcore train | sample | eval | models``: the model zoo from the command line.

``gmcore train MODEL [flags]`` parses in two stages: the model name first, then a parser built
from two dataclasses, :class:`gmcore.train.TrainConfig` and the model's ``Config``, whose fields
become flags (``gmcore train vae --help`` lists them). Values come from, in increasing priority:
the dataclass defaults, the model's ``train_defaults`` (a class attribute: a dict of TrainConfig
fields, for models whose good step count or batch size differs from the general defaults),
``--config FILE.toml`` (tables ``[train]`` and ``[model]``), the flags.
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli import command


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model name (gmcore models lists them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="training and model flags (MODEL --help)")


def _model_parser(name: str, spec) -> argparse.ArgumentParser:
    from .configs import add_dataclass_flags
    from .train import TrainConfig

    p = argparse.ArgumentParser(prog=f"gmcore train {name}",
                                description=f"{name}: {spec.description} (default data: {spec.dataset})")
    p.add_argument("--config", metavar="FILE.toml", help="TOML file with [train] and [model] tables")
    add_dataclass_flags(p, TrainConfig, "training")
    add_dataclass_flags(p, spec.config_cls, f"model ({name})")
    return p


def parse_train_args(model: str, rest: list[str]):
    """(model_name, TrainConfig, model config) from the command line, or SystemExit(2) with a
    message naming the bad flag or value."""
    from . import configs, models
    from .train import TrainConfig

    try:
        spec = models.get(model)
    except KeyError as exc:
        raise SystemExit(f"gmcore train: {exc.args[0]}") from None
    p = _model_parser(model, spec)
    ns = p.parse_args(rest)
    try:
        file_vals = configs.read_toml(ns.config) if ns.config else {}
        tcfg = configs.from_mapping(TrainConfig, getattr(spec.cls, "train_defaults", {}),
                                    source=f"{model}.train_defaults")
        tcfg = configs.from_mapping(TrainConfig, file_vals.get("train", {}), source=ns.config or "",
                                    base=tcfg)
        mcfg = configs.from_mapping(spec.config_cls, file_vals.get("model", {}), source=ns.config or "")
        tcfg = configs.from_namespace(TrainConfig, ns, base=tcfg)
        mcfg = configs.from_namespace(spec.config_cls, ns, base=mcfg)
    except configs.ConfigError as exc:
        p.error(str(exc))
    return model, tcfg, mcfg


@command("train", help="train a model (gmcore train MODEL --help for its flags)",
         add_arguments=_train_arguments)
def _train(args: argparse.Namespace) -> int:
    if not args.model:
        print("usage: gmcore train MODEL [flags]   (models: " + ", ".join(_model_names()) + ")",
              file=sys.stderr)
        return 2
    name, tcfg, mcfg = parse_train_args(args.model, args.rest)
    from .train import train

    try:
        result = train(name, tcfg, mcfg)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"gmcore train: {exc}", file=sys.stderr)
        return 1
    return 130 if result.get("interrupted") else 0


def _ckpt_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="run checkpoint: RUN_DIR, RUN_DIR/last or RUN_DIR/last.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    _ckpt_arguments(p)
    p.add_argument("--n", type=int, default=64, help="number of samples")
    p.add_argument("--out", default="", help="PNG file (default: samples_<seed>.png in the run folder); "
                   "for text and audio runs a folder (default: samples_<seed>/)")


def _resolve_ckpt(path: str):
    from pathlib import Path

    p = Path(path)
    return p / "last" if p.is_dir() else p


@command("sample", help="draw samples from a trained model into a PNG", add_arguments=_sample_arguments)
def _sample(args: argparse.Namespace) -> int:
    from .plots import save_image_grid
    from .random import Generator
    from .train import load_run_model

    if args.n < 1:
        print("gmcore sample: --n must be positive", file=sys.stderr)
        return 2
    ckpt = _resolve_ckpt(args.checkpoint)
    try:
        model, state = load_run_model(ckpt, device=args.device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"gmcore sample: {exc}", file=sys.stderr)
        return 1
    from .autograd import no_grad

    gen = Generator(device=args.device).manual_seed(args.seed)
    if len(model.data.shape) != 3 and hasattr(model, "save_samples"):
        return _sample_files(args, model, state, ckpt, gen)
    with no_grad():
        samples = model.sample(args.n, generator=gen)
    out = args.out or str(ckpt.parent / f"samples_{args.seed}.png")
    save_image_grid(samples, out)
    print(out)
    return 0


def _sample_files(args, model, state, ckpt, gen) -> int:
    """Text and audio runs: the model writes its own format (samples.txt, samples.wav) into
    ``--out`` (a folder; default samples_<seed>/ in the run folder); the model's config sets
    how many and how long."""
    from pathlib import Path

    from .autograd import no_grad

    try:
        train_set = _run_dataset(model, state, "train")
    except (FileNotFoundError, ValueError) as exc:
        print(f"gmcore sample: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else ckpt.parent / f"samples_{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    with no_grad():
        written = model.save_samples(out, train_set, gen) or {}
    print(out / written.get("samples_file", ""))
    return 0


def _run_dataset(model, state, split):
    """The data set a run trained on (its name, data root and the model's dataset options)."""
    from . import data as gdata

    tc = state["train_config"]
    opts = getattr(type(model), "dataset_options", lambda c: {})(model.config)
    return gdata.get_dataset(state["data"]["name"], split, root=tc.get("data_root") or None, **opts)


@command("eval", help="test bits/dim (and sample quality) of a trained model", add_arguments=_ckpt_arguments)
def _eval(args: argparse.Namespace) -> int:
    from .train import evaluate, load_run_model

    try:
        model, state = load_run_model(_resolve_ckpt(args.checkpoint), device=args.device)
        test = _run_dataset(model, state, "test")
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"gmcore eval: {exc}", file=sys.stderr)
        return 1
    res = {"model": state["model_name"], "step": state["step"],
           **evaluate(model, test, seed=args.seed, device=args.device)}
    print(json.dumps(res, indent=1))
    return 0


def _model_names():
    from . import models

    return models.names()


@command("models", help="list the registered models")
def _models(args: argparse.Namespace) -> int:
    from . import models

    rows = [(s.name, s.family, s.dataset, s.description) for s in models.specs()]
    widths = [max(len(r[i]) for r in rows + [("model", "family", "data", "")]) for i in range(3)]
    print(f"{'model':<{widths[0]}}  {'family':<{widths[1]}}  {'data':<{widths[2]}}  description")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0
