"""The training loop behind ``gmcore train``: data, model, optimizer, logging, checkpoints.

One run lives in one folder (``--out``, default ``runs/<model>``)::

    config.json        both configs, the data set and the gmcore version
    metrics.jsonl      one JSON object per logged step (split "train") and evaluation ("test")
    last.safetensors   the latest checkpoint (weights, optimizer, EMA) ...
    last.json          ... and its sidecar (configs, step, scheduler, RNG and data-loader state)
    samples.png        a grid of samples;  loss_curve.png  the losses against step
    metrics.json       the final evaluation: test bits/dim, baseline, sample-quality figures

Resuming (``--resume``) restores everything the next step depends on (weights, optimizer
moments, scheduler, EMA, gmcore's RNG, the data loader's position), so on the CPU a resumed
run reproduces the uninterrupted run's losses bit for bit. Evaluation draws from its own
generator seeded by (seed, step): when and how often it runs never changes the training path.
Ctrl-C saves a checkpoint and exits cleanly.
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path


from . import configs, io, metrics
from .autograd import no_grad
from .random import Generator, default_generator, manual_seed

__all__ = ["TrainConfig", "Run", "train", "evaluate", "load_run_model"]

QUALITY_SAMPLES = 1000  # samples drawn for digits-FID / KID / precision-recall


@dataclass
class TrainConfig:
    dataset: str = field(default="", metadata={"help": "data set name ('' = the model's default)"})
    data_root: str = field(default="", metadata={"help": "folder or file for user data sets "
                                                          "(mnist, cifar10, image_folder, text, audio)"})
    steps: int = field(default=2000, metadata={"help": "optimizer steps", "min": 0})
    batch_size: int = field(default=64, metadata={"help": "examples per step", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate", "min": 0.0})
    lr_schedule: str = field(default="cosine", metadata={"help": "after warm-up",
                                                         "choices": ["constant", "cosine"]})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps", "min": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0.0})
    grad_clip: float = field(default=0.0, metadata={"help": "clip the gradient norm (0 = off)", "min": 0.0})
    ema: float = field(default=0.0, metadata={"help": "EMA decay of the weights used for evaluation "
                                                      "and sampling (0 = off, e.g. 0.999)", "min": 0.0})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, data order and sampling"})
    out: str = field(default="", metadata={"help": "run folder (default runs/<model>, or runs/<model>-N "
                                                      "when that holds a run already)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from last.json"})
    log_every: int = field(default=25, metadata={"help": "steps between metrics.jsonl rows", "min": 1})
    eval_every: int = field(default=500, metadata={"help": "steps between test evaluations (0 = end only)",
                                                   "min": 0})
    ckpt_every: int = field(default=500, metadata={"help": "steps between checkpoints (0 = end only)",
                                                   "min": 0})
    num_samples: int = field(default=64, metadata={"help": "samples in samples.png", "min": 0})
    sample_quality: bool = field(default=True, metadata={"help": "digits-FID/KID/precision-recall "
                                                                  "of samples at the end (image data)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})

    def __post_init__(self):
        if self.ema and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be 0 (off) or a decay in (0, 1), got {self.ema}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")


def _dataset_options(spec, model_cfg) -> dict:
    opts = getattr(spec.cls, "dataset_options", None)
    return opts(model_cfg) if opts else {}


class Run:
    """Everything one training run holds; built fresh or from its folder's checkpoint."""

    def __init__(self, model_name: str, tcfg: TrainConfig, mcfg=None):
        from . import data as gdata
        from . import models, optim
        from .models.base import DataInfo

        self.spec = models.get(model_name)
        self.tcfg = tcfg
        self.mcfg = mcfg if mcfg is not None else self.spec.config_cls()
        self.dataset_name = tcfg.dataset or self.spec.dataset
        self.out = Path(tcfg.out) if tcfg.out else _default_out(model_name, tcfg.resume)
        opts = _dataset_options(self.spec, self.mcfg)
        root = tcfg.data_root or None
        self.train_set = gdata.get_dataset(self.dataset_name, "train", root=root, **opts)
        self.test_set = gdata.get_dataset(self.dataset_name, "test", root=root, **opts)
        self.info = DataInfo(shape=tuple(self.train_set.shape),
                             num_levels=int(getattr(self.train_set, "num_levels", 0) or 0),
                             name=self.dataset_name,
                             num_classes=int(getattr(self.train_set, "num_classes", 0) or 0))
        manual_seed(tcfg.seed)
        self.model = self.spec.cls(self.mcfg, self.info).to(tcfg.device)
        params = list(self.model.parameters())
        self.optimizer = optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay) \
            if tcfg.weight_decay else optim.Adam(params, lr=tcfg.lr)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.ema = optim.EMA(self.model, decay=tcfg.ema) if tcfg.ema else None
        self.loader = gdata.DataLoader(self.train_set, batch_size=tcfg.batch_size, shuffle=True,
                                       drop_last=len(self.train_set) > tcfg.batch_size,
                                       generator=tcfg.seed, device=tcfg.device)
        self.step = 0

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to zero at ``steps``."""
        t = self.tcfg
        if t.warmup and step < t.warmup:
            return (step + 1) / t.warmup
        if t.lr_schedule == "cosine" and t.steps > t.warmup:
            frac = min(1.0, (step - t.warmup) / (t.steps - t.warmup))
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    # ---- checkpoints ---------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "kind": "gmcore-run", "model_name": self.spec.name, "step": self.step,
            "train_config": configs.to_dict(self.tcfg), "model_config": configs.to_dict(self.mcfg),
            "data": {"name": self.dataset_name, "shape": list(self.info.shape),
                     "num_levels": self.info.num_levels, "num_classes": self.info.num_classes},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": default_generator.get_state(),
            "loader": self.loader.state_dict(),
        }

    def save(self) -> Path:
        io.save_checkpoint(self.out / "last", self.state())
        return self.out / "last.json"

    def restore(self) -> None:
        state = io.load_checkpoint(self.out / "last", device=self.tcfg.device)
        if state.get("model_name") != self.spec.name:
            raise ValueError(f"{self.out}/last.json holds a {state.get('model_name')!r} run, not "
                             f"{self.spec.name!r}")
        saved = state["model_config"]
        now = configs.to_dict(self.mcfg)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            raise ValueError(f"cannot resume {self.out}: model config differs from the checkpoint's in "
                             + ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in diff))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"cannot resume {self.out} with --ema: the checkpoint has no EMA state")
            self.ema.load_state_dict(state["ema"])
        default_generator.set_state(state["rng"])
        self.loader.load_state_dict(state["loader"])
        self.step = int(state["step"])


def _default_out(model_name: str, resume: bool) -> Path:
    """``runs/<model>``; when that already holds a run and this is not a resume, the first free
    ``runs/<model>-2``, ``-3``, ... (a finished run is never overwritten, and the command that
    started it still works when typed again)."""
    base = Path("runs") / model_name
    if resume or not (base / "last.json").exists():
        return base
    n = 2
    while (base.parent / f"{model_name}-{n}" / "last.json").exists():
        n += 1
    return base.parent / f"{model_name}-{n}"


def _batches(loader):
    while True:
        yield from loader


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything after it is dropped
    return rows


def evaluate(model, dataset, batch_size: int = 256, seed: int = 0, device="cpu") -> dict:
    """Test NLL of ``model`` on ``dataset`` in nats/example and bits/dim (the model's ``nll``)."""
    from .data import DataLoader

    gen = Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, device=device):
            nll = model.nll(batch, generator=gen)
            total += float(nll.sum().item())
            count += nll.shape[0]
    model.train(was_training)
    nats = total / max(count, 1)
    dims = model.data.dims
    return {"test_nll_nats": nats, "test_bits_per_dim": metrics.bits_per_dim(nats, dims),
            "nll_kind": model.nll_kind}


def train(model_name: str, tcfg: TrainConfig, mcfg=None, log=print) -> dict:
    """Train ``model_name`` as configured; returns the final metrics (also in metrics.json)."""
    run = Run(model_name, tcfg, mcfg)
    out = run.out
    log(f"run folder: {out}")
    ckpt_json = out / "last.json"
    if tcfg.resume:
        run.restore()
        log(f"resumed {out} at step {run.step}")
    elif ckpt_json.exists():
        raise FileExistsError(f"{out} already holds a run (last.json); pass --resume to continue it or "
                              "--out to start a new one")
    elif hasattr(run.model, "prepare"):
        run.model.prepare(run.train_set)  # e.g. PPCA's closed-form fit
    if not getattr(run.model, "trainable", True):
        log(f"{model_name}: fitted in closed form; no optimizer steps")
        run.step = tcfg.steps
    out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(out / "config.json", json.dumps({
        "model": model_name, "train": configs.to_dict(tcfg), "model_config": configs.to_dict(run.mcfg),
        "data": run.dataset_name, "gmcore": _version(), "python": platform.python_version()}, indent=1))
    log_path = out / "metrics.jsonl"
    # Keep only the rows up to the checkpoint: later ones belong to steps that will be redone.
    rows = [r for r in _read_log(log_path) if r.get("step", 0) <= run.step] if tcfg.resume else []
    io.atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))
    logf = open(log_path, "a", encoding="utf-8")

    def write_row(row):
        rows.append(row)
        logf.write(json.dumps(row) + "\n")
        logf.flush()

    def run_eval():
        ctx = run.ema.average_parameters() if run.ema else contextlib.nullcontext()
        with ctx:
            res = evaluate(run.model, run.test_set, seed=tcfg.seed * 1_000_003 + run.step, device=tcfg.device)
        write_row({"step": run.step, "split": "test", **res})
        return res

    bar = _progress(tcfg, run.step)
    batches = _batches(run.loader)
    model, opt = run.model, run.optimizer
    model.train()
    interrupted = False
    t0, acc = time.perf_counter(), {}
    try:
        while run.step < tcfg.steps:
            batch = next(batches)
            loss, logs = model.loss(batch)
            loss_value = loss.item()  # one device sync per step, reused below
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {run.step}; lower --lr or "
                                         "enable --grad-clip")
            opt.zero_grad()
            loss.backward()
            if tcfg.grad_clip:
                from .nn.utils import clip_grad_norm_
                clip_grad_norm_(model.parameters(), tcfg.grad_clip)
            opt.step()
            run.scheduler.step()
            if run.ema:
                run.ema.update()
            run.step += 1
            for k, v in {"loss": loss_value, **logs}.items():
                acc[k] = acc.get(k, 0.0) + float(v)
            acc["_n"] = acc.get("_n", 0) + 1
            if run.step % tcfg.log_every == 0 or run.step == tcfg.steps:
                n = acc.pop("_n")
                row = {"step": run.step, "split": "train", "lr": run.scheduler.get_last_lr()[0],
                       **{k: v / n for k, v in acc.items()},
                       "sec_per_step": (time.perf_counter() - t0) / n}
                write_row(row)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4g}")
                acc, t0 = {}, time.perf_counter()
            if bar is not None:
                bar.update(1)
            if tcfg.eval_every and run.step % tcfg.eval_every == 0 and run.step < tcfg.steps:
                res = run_eval()
                log(f"step {run.step}: test {res['test_bits_per_dim']:.4f} bits/dim ({res['nll_kind']})")
            if tcfg.ckpt_every and run.step % tcfg.ckpt_every == 0:
                run.save()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    if interrupted:
        path = run.save()
        logf.close()
        log(f"interrupted at step {run.step}: checkpoint saved to {path}; continue with --resume")
        return {"interrupted": True, "step": run.step}
    run.save()
    final = run_eval()
    logf.close()
    result = {"model": model_name, "dataset": run.dataset_name, "step": run.step, **final}
    result.update(_baseline(run))
    result.update(_pictures(run, rows))
    io.atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
    log(json.dumps(result, indent=1))
    return result


def _baseline(run) -> dict:
    """Per-pixel independent categorical NLL on the same split (image data with levels)."""
    from .data._images import ImageArrayDataset

    if not isinstance(run.train_set, ImageArrayDataset) or not run.info.num_levels:
        return {}
    nats = metrics.categorical_baseline_nll(run.train_set.arrays[0], run.test_set.arrays[0],
                                            run.info.num_levels)
    return {"baseline": "per-pixel independent categorical", "baseline_bits_per_dim":
            metrics.bits_per_dim(nats, run.info.dims)}


@contextlib.contextmanager
def _sampling(run):
    """EMA weights (when kept), eval mode and no autograd around drawing samples."""
    ctx = run.ema.average_parameters() if run.ema else contextlib.nullcontext()
    with ctx, no_grad():
        run.model.eval()
        try:
            yield
        finally:
            run.model.train()


def _pictures(run, rows) -> dict:
    out, tcfg, res = run.out, run.tcfg, {}
    from .plots import save_image_grid, save_loss_curve

    save_loss_curve(rows, out / "loss_curve.png")
    gen = Generator(device=tcfg.device).manual_seed(tcfg.seed)
    if len(run.info.shape) != 3 and tcfg.num_samples and hasattr(run.model, "save_samples"):
        with _sampling(run):  # text, audio: the model writes its own format
            res.update(run.model.save_samples(out, run.train_set, gen) or {})
        return res
    if len(run.info.shape) != 3 or not (tcfg.num_samples or tcfg.sample_quality):
        return res
    quality = tcfg.sample_quality and run.dataset_name == "digits"
    n = max(tcfg.num_samples, QUALITY_SAMPLES if quality else 0)
    with _sampling(run):
        samples = run.model.sample(n, generator=gen)
    if tcfg.num_samples:
        save_image_grid(samples[:tcfg.num_samples], out / "samples.png")
    if quality:
        from . import feature_metrics
        res.update(feature_metrics.sample_quality(samples, run.test_set))
    return res


def load_run_model(path, device="cpu"):
    """(model, state) from a run checkpoint (``runs/vae/last`` or its .json); EMA weights are
    swapped in when the run kept them."""
    from . import configs as cf
    from . import models
    from .models.base import DataInfo

    state = io.load_checkpoint(path, device=device)
    if state.get("kind") != "gmcore-run":
        raise ValueError(f"{path} is not a gmcore training checkpoint")
    spec = models.get(state["model_name"])
    mcfg = cf.from_mapping(spec.config_cls, state["model_config"], source=str(path))
    d = state["data"]
    model = spec.cls(mcfg, DataInfo(shape=tuple(d["shape"]), num_levels=d["num_levels"], name=d["name"],
                                    num_classes=d.get("num_classes", 0)))
    model.load_state_dict(state["model"])
    model.to(device)
    if state.get("ema"):
        from .optim import EMA
        ema = EMA(model, decay=state["train_config"]["ema"] or 0.999)
        ema.load_state_dict(state["ema"])
        ema.copy_to(model)
    model.eval()
    return model, state


def _progress(tcfg, start):
    if not tcfg.progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=tcfg.steps, initial=start, desc="train", unit="step", dynamic_ncols=True)


def _version() -> str:
    from . import __version__
    return __version__



