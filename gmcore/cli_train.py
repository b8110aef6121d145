"""``gmcore train | sample | eval | models``: the model zoo from the command line.

``gmcore train MODEL [flags]`` parses in two stages: the model name first, then a parser built
from two dataclasses, :class:`gmcore.train.TrainConfig` and the model's ``Config``, whose fields
become flags (``gmcore train vae --help`` lists them). Values come from, in increasing priority:
the dataclass defaults, the model's ``train_defaults`` and ``config_defaults`` (class attributes:
dicts of TrainConfig and Config fields, for models whose good step count, batch size or size
differs from the general defaults, possibly per kind of data or per data set: see
:func:`model_defaults` and ``gmcore/models/base.py``), ``--config FILE.toml`` (tables ``[train]``
and ``[model]``), the flags.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from .cli import ArgumentParser, CLIError, command


def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model name (gmcore models lists them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="training and model flags (MODEL --help)")


def _model_parser(name: str, spec) -> argparse.ArgumentParser:
    from .configs import add_dataclass_flags
    from .train import TrainConfig

    p = ArgumentParser(prog=f"gmcore train {name}",
                       description=f"{name}: {spec.description} (default data: {spec.dataset})",
                       epilog=_defaults_epilog(spec.cls))
    p.add_argument("--config", metavar="FILE.toml", help="TOML file with [train] and [model] tables")
    add_dataclass_flags(p, TrainConfig, "training")
    add_dataclass_flags(p, spec.config_cls, f"model ({name})")
    return p


def _defaults_epilog(cls) -> str | None:
    """The model's own defaults, which the flags' "(default: ...)" (the dataclass's) omit."""
    from .data.registry import DATASETS

    kinds = {info.kind for info in DATASETS.values()}
    parts = []
    for attr in ("train_defaults", "config_defaults"):
        d = getattr(cls, attr, None) or {}
        plain = ", ".join(f"{k}={v!r}" for k, v in d.items() if not isinstance(v, dict))
        sections = "; ".join(f"on {k}{' data' if k in kinds else ''}: "
                             + ", ".join(f"{a}={b!r}" for a, b in v.items())
                             for k, v in d.items() if isinstance(v, dict))
        if plain or sections:
            parts.append(f"{attr}: " + "; ".join(x for x in (plain, sections) if x))
    return ("this model's defaults (over those shown above; TOML and flags override): "
            + " | ".join(parts)) if parts else None


def model_defaults(defaults: dict, dataset: str, source: str = "defaults") -> dict:
    """The fields a model's ``train_defaults`` or ``config_defaults`` give for ``dataset``.

    ``defaults`` maps field names to values, and may hold sections: a key naming a kind of data
    (``"image"``, ``"points"``, ``"text"``, ``"audio"``: the ``kind`` of a registered data set)
    or a registered data set (``"8gaussians"``) whose value is a dict of fields. The plain fields
    apply everywhere; the section of ``dataset``'s kind overrides them, and ``dataset``'s own
    section overrides both. A section naming no kind or data set, or one that sets ``dataset``,
    is a :class:`gmcore.configs.ConfigError`.

    >>> d = {"steps": 1000, "lr": 1e-3, "points": {"steps": 4000}, "8gaussians": {"lr": 5e-4}}
    >>> model_defaults(d, "digits")
    {'steps': 1000, 'lr': 0.001}
    >>> model_defaults(d, "moons")
    {'steps': 4000, 'lr': 0.001}
    >>> model_defaults(d, "8gaussians")
    {'steps': 4000, 'lr': 0.0005}
    """
    from .configs import ConfigError
    from .data.registry import DATASETS

    kinds = {info.kind for info in DATASETS.values()}
    plain, sections = {}, {}
    for key, value in (defaults or {}).items():
        if not isinstance(value, dict):
            plain[key] = value
        elif key not in kinds and key not in DATASETS:
            raise ConfigError(f"{source}: section {key!r} names neither a kind of data "
                              f"({', '.join(sorted(kinds))}) nor a data set")
        elif "dataset" in value:
            raise ConfigError(f"{source}: section {key!r} may not set the data set it depends on")
        else:
            sections[key] = value
    info = DATASETS.get(dataset)
    out = dict(plain)
    if info is not None:
        out.update(sections.get(info.kind, {}))
    out.update(sections.get(dataset, {}))
    return out


def parse_train_args(model: str, rest: list[str]):
    """(model_name, TrainConfig, model config) from the command line, or SystemExit(2) with a
    message naming the bad flag or value.

    The data set is settled first (the flag, the TOML file, the model's ``train_defaults``, its
    registered default data, in that order), then the model's defaults for that data set apply
    (:func:`model_defaults`), then the TOML file, then the flags.
    """
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
        train_defaults = getattr(spec.cls, "train_defaults", {}) or {}
        dataset = (ns.dataset or file_vals.get("train", {}).get("dataset")
                   or train_defaults.get("dataset") or spec.dataset)
        tcfg = configs.from_mapping(
            TrainConfig, model_defaults(train_defaults, dataset, f"{model}.train_defaults"),
            source=f"{model}.train_defaults")
        tcfg = configs.from_mapping(TrainConfig, file_vals.get("train", {}), source=ns.config or "",
                                    base=tcfg)
        mcfg = configs.from_mapping(
            spec.config_cls, model_defaults(getattr(spec.cls, "config_defaults", {}), dataset,
                                            f"{model}.config_defaults"),
            source=f"{model}.config_defaults")
        mcfg = configs.from_mapping(spec.config_cls, file_vals.get("model", {}),
                                    source=ns.config or "", base=mcfg)
        tcfg = configs.from_namespace(TrainConfig, ns, base=tcfg)
        mcfg = configs.from_namespace(spec.config_cls, ns, base=mcfg)
    except configs.ConfigError as exc:
        p.error(str(exc))
    return model, tcfg, mcfg


def require_device(dev: str) -> None:
    """Refuse, in one line naming ``--device``, a device this machine cannot run (checked before
    any work starts, so that no half-made run folder is left behind)."""
    from . import backend

    try:
        d = backend.as_device(dev)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"--device {dev}: {exc}", status=2) from None
    if d.type == "cpu":
        return
    if importlib.util.find_spec("cupy") is None:
        why = "cupy is not installed; pip install 'gmcore[gpu]' on a machine with an NVIDIA GPU"
    elif not backend.cuda_is_available():
        why = "cupy is installed but sees no GPU"
    elif d.index >= backend.cuda_device_count():
        why = f"only {backend.cuda_device_count()} CUDA device(s) are visible"
    else:
        return
    raise CLIError(f"--device {dev}: no CUDA device is usable here ({why})")


@command("train", help="train a model (gmcore train MODEL --help for its flags)",
         add_arguments=_train_arguments)
def _train(args: argparse.Namespace) -> int:
    if not args.model:
        raise CLIError("name a model: gmcore train MODEL [flags]   (models: " + ", ".join(_model_names()) + ")",
                       status=2)
    name, tcfg, mcfg = parse_train_args(args.model, args.rest)
    require_device(tcfg.device)
    from .train import train

    result = train(name, tcfg, mcfg)
    return 130 if result.get("interrupted") else 0


def _sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a run: RUN_DIR, or its checkpoint RUN_DIR/last[.safetensors]")
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help, with the run's model's sampling options when RUN is given")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", default="",
                   help="FILE.png: a grid of image samples (default: samples_<seed>.png in the run "
                        "folder); FILE.npy: the raw sample array, images (N, C, H, W) in [0, 1] or "
                        "(N, length) ids of text and audio runs; text and audio runs otherwise write "
                        "into a folder (default: samples_<seed>/)")


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="a run: RUN_DIR, or its checkpoint RUN_DIR/last[.safetensors]")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("-h", "--help", action="store_true",
                   help="show this help, with the run's model's evaluation options when RUN is given")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the evaluation's random draws (IWAE samples, dequantization noise); "
                        "default: the one the run's final evaluation used, so the figures equal "
                        "metrics.json's")
    p.add_argument("--sample-quality", action=argparse.BooleanOptionalAction, default=True,
                   help="digits runs: also draw the run's final samples and score them (digits-FID, "
                        "KID, precision/recall; default on)")


def _resolve_ckpt(path: str) -> Path:
    """The checkpoint stem of a run folder (``RUN/best`` when the run kept one with --val-split:
    the weights its metrics.json describes; else ``RUN/last``) or of a checkpoint path; a clear
    error when there is no run there."""
    p = Path(path)
    if p.is_dir():
        stem = p / "best" if (p / "best.safetensors").exists() else p / "last"
    else:
        stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    # last.safetensors is the checkpoint; a last.json alone is an older run's sidecar format
    if not any(stem.with_name(stem.name + ext).exists() for ext in (".safetensors", ".json")):
        where = "the folder has no last.safetensors" if p.is_dir() else \
            "expected a run folder, or its checkpoint RUN/last.safetensors"
        raise CLIError(f"no run found at {path} ({where})")
    return stem


def _is_image_run(model) -> bool:
    return len(model.data.shape) == 3


def _with_model_options(p, model_cls, attr: str, what: str):
    """Add the options dataclass ``model_cls.<attr>`` (``SampleOptions``, ``EvalOptions``) to
    parser ``p`` as flags, when a run's model is named and declares it."""
    from .configs import add_dataclass_flags

    options = getattr(model_cls, attr, None)
    if options is not None:
        add_dataclass_flags(p, options, f"{what} of {getattr(model_cls, 'model_name', '')}")
    return p


def _sample_parser(model_cls=None) -> argparse.ArgumentParser:
    """The full ``gmcore sample`` parser: the common flags, plus the sampling options that
    ``model_cls`` declares (its ``SampleOptions`` dataclass) when a run is named."""
    from .cli import ArgumentParser

    p = ArgumentParser(prog="gmcore sample", add_help=False,
                       description="draw samples from a trained model (a PNG grid, the model's own "
                                   "format, or .npy)")
    _sample_arguments(p)
    return _with_model_options(p, model_cls, "SampleOptions", "sampling options")


def _eval_parser(model_cls=None) -> argparse.ArgumentParser:
    """The full ``gmcore eval`` parser: the common flags, plus the evaluation options that
    ``model_cls`` declares (its ``EvalOptions`` dataclass) when a run is named."""
    from .cli import ArgumentParser

    p = ArgumentParser(prog="gmcore eval", add_help=False, description=_EVAL_HELP)
    _eval_arguments(p)
    return _with_model_options(p, model_cls, "EvalOptions", "evaluation options")


def _model_options(model, extra: list[str], attr: str, parser) -> dict:
    """The model's ``SampleOptions`` / ``EvalOptions`` (``attr``) from the flags argparse left
    over (``parser(model_cls)`` knows them): every sampling option (defaults filled in), only the
    evaluation options given; an unknown flag is an error naming the options the model takes."""
    import dataclasses

    from .configs import from_namespace

    options = getattr(type(model), attr, None)
    what = "sampling" if attr == "SampleOptions" else "evaluation"
    if options is None:
        if extra:
            raise CLIError(f"unrecognized arguments: {' '.join(extra)} ({model.model_name} has no "
                           f"{what} options)", status=2)
        return {}
    ns, unknown = parser(type(model)).parse_known_args(extra)
    if unknown:
        known = ", ".join("--" + f.name.replace("_", "-") for f in dataclasses.fields(options))
        raise CLIError(f"unrecognized arguments: {' '.join(unknown)} ({model.model_name} takes {known})",
                       status=2)
    values = dataclasses.asdict(from_namespace(options, ns))
    if attr == "EvalOptions":   # config fields: only the flags given replace the run's values
        return {k: v for k, v in values.items() if getattr(ns, k, None) is not None}
    return values


@command("sample", help="draw samples from a trained model (a PNG grid, the model's own format, or .npy)",
         add_arguments=_sample_arguments, extra_flags=True)
def _sample(args: argparse.Namespace) -> int:
    from .autograd import no_grad
    from .plots import save_image_grid
    from .random import Generator
    from .train import load_run_model

    if args.help:
        _sample_parser(_run_model_class(args.checkpoint) if args.checkpoint else None).print_help()
        return 0
    if not args.checkpoint:
        _sample_parser().error("the following arguments are required: checkpoint")
    if args.n < 1:
        raise CLIError("--n must be positive", status=2)
    require_device(args.device)
    ckpt = _resolve_ckpt(args.checkpoint)
    model, state = load_run_model(ckpt, device=args.device)
    options = _model_options(model, getattr(args, "extra", []), "SampleOptions", _sample_parser)
    gen = Generator(device=args.device).manual_seed(args.seed)
    if args.out.endswith(".npy"):
        with no_grad():
            samples = model.sample(args.n, generator=gen, **_sequence_length(model), **options)
        _save_npy(samples, args.out)
        print(args.out)
        return 0
    if not _is_image_run(model) and hasattr(model, "save_samples"):
        return _sample_files(args, model, state, ckpt, gen)
    if args.out and not args.out.endswith(".png"):
        raise CLIError(f"--out {args.out}: an image run writes FILE.png (a grid) or FILE.npy (the array)",
                       status=2)
    with no_grad():
        samples = model.sample(args.n, generator=gen, **options)
    out = args.out or str(ckpt.parent / f"samples_{args.seed}.png")
    if samples.ndim == 2 and samples.shape[1] == 2:   # 2-D points (moons ...): a scatter
        from .plots import save_scatter
        save_scatter(samples, out, title=f"{state['model_name']}: {args.n} samples")
    else:
        save_image_grid(samples, out)
    print(out)
    return 0


def _run_model_class(path: str):
    """The model class of the run at ``path`` (for its --help), or None when it can't be read."""
    import json

    from . import models

    p = Path(path)
    config = (p if p.is_dir() else p.parent) / "config.json"
    try:
        return models.get(json.loads(config.read_text("utf-8"))["model"]).cls
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sequence_length(model) -> dict:
    """Text and audio runs: draw the length the model's samples files use (its
    ``sample_length``), not the training window."""
    length = getattr(model.config, "sample_length", 0)
    return {"length": length} if length and not _is_image_run(model) else {}


def _save_npy(samples, path) -> None:
    import io as _io

    import numpy as np

    from .io import atomic_write_bytes

    buf = _io.BytesIO()
    np.save(buf, samples.detach().cpu().numpy(), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def _sample_files(args, model, state, ckpt, gen) -> int:
    """Text and audio runs: the model writes its own format (samples.txt, samples.wav) into
    ``--out`` (a folder; default samples_<seed>/ in the run folder); the model's config sets
    how many and how long."""
    from .autograd import no_grad

    train_set = _run_dataset(model, state, "train")
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
    # a second stage without --data-root used its base run's
    root = tc.get("data_root") or (state.get("base") or {}).get("data_root") or None
    return gdata.get_dataset(state["data"]["name"], split, root=root, **opts)


_EVAL_HELP = ("test bits per dim, char or sample of a trained model, and for digits runs the sample "
              "quality (digits-FID, KID, precision/recall); the figures equal metrics.json's")


@command("eval", help=_EVAL_HELP, add_arguments=_eval_arguments, extra_flags=True)
def _eval(args: argparse.Namespace) -> int:
    from .autograd import no_grad
    from .train import eval_seed, evaluate, final_samples, load_run_model, model_data

    if args.help:
        _eval_parser(_run_model_class(args.checkpoint) if args.checkpoint else None).print_help()
        return 0
    if not args.checkpoint:
        _eval_parser().error("the following arguments are required: checkpoint")
    require_device(args.device)
    ckpt = _resolve_ckpt(args.checkpoint)
    model, state = load_run_model(ckpt, device=args.device)
    options = _model_options(model, getattr(args, "extra", []), "EvalOptions", _eval_parser)
    test = _run_dataset(model, state, "test")
    tc = state["train_config"]
    # The run's own final evaluation drew from this seed (and used the EMA weights, which
    # load_run_model swaps in): the same seed gives the same figure, bit for bit.
    seed = eval_seed(tc["seed"], state["step"]) if args.seed is None else args.seed
    res = {"model": state["model_name"], "step": state["step"], "seed": seed,
           **evaluate(model, model_data(model, test), seed=seed, device=args.device, options=options)}
    if args.sample_quality and state["data"]["name"] == "digits" and _is_image_run(model):
        with no_grad():  # the run's own end-of-training draws: same seed, same number
            _, quality = final_samples(model, test, "digits", seed=tc["seed"],
                                       num_samples=tc.get("num_samples", 0), quality=True, device=args.device)
        res.update(quality)
    if hasattr(model, "test_metrics"):   # model-specific figures, as the run's end computed them
        model.eval()
        with no_grad():
            res.update(model.test_metrics(test) or {})
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


# `gmcore edit` uses the helpers above: registered once this module is complete, whichever of
# gmcore.cli and gmcore.cli_train is imported first
from . import cli_edit  # noqa: E402,F401
from . import cli_dream  # noqa: E402,F401
