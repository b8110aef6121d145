"""The training loop behind ``gmcore train``: data, model, optimizer, logging, checkpoints.

One run lives in one folder (``--out``, default ``runs/<model>``)::

    run.lock           held while a run trains in the folder (PID and host; see gmcore.runlock)
    config.json        both configs, the data set and the gmcore version (written before step 1);
                       a second stage's ``base_run``: the base run's folder, checkpoint SHA-256,
                       model and step (see gmcore.models.stages)
    metrics.jsonl      one JSON object per logged step (split "train") and evaluation ("test")
    last.safetensors   the latest checkpoint, one file: weights, optimizers, EMA, and in its header
                       the configs, step, scheduler, RNG and data-loader state (see gmcore.io)
    last.json          a readable copy of that header (loading does not need it)
    best.safetensors   with --val-split: the checkpoint of the step with the best validation NLL
                       (and best.json); the final figures are its weights' (see gmcore.validation)
    samples.png        a grid of samples;  loss_curve.png  the losses against step
    progress.png       models without a likelihood (GANs) on images: a row of fixed-noise
                       samples per evaluation (rows kept in progress.npz)
    events.out.tfevents.*  with --tensorboard: scalars, sample grids, histograms, the configs
                       (see gmcore.tensorboard; ``tensorboard --logdir runs`` shows every run)
    metrics.json       the final evaluation: test bits/dim, baseline, sample-quality figures

Resuming (``--resume``) restores everything the next step depends on (weights, optimizer
moments, scheduler, EMA, gmcore's RNG, the data loader's position, the partial sums of the
next metrics row), so on the CPU a resumed run reproduces the uninterrupted run's losses bit
for bit. Evaluation draws from its own generator seeded by (seed, step): when and how often it
runs never changes the training path.

Validation (``--val-split F``): a seeded fraction F of the training set is held out and scored
every ``--eval-every`` steps and at the last step ("val" rows) instead of the test set; the
final test NLL, samples and pictures are those of the best validation step's weights, kept in
``best.safetensors``, and ``--patience N`` stops training after N validations in a row without
a better NLL. The baseline (metrics.json's ``baseline_*``) is fitted on the whole training set.

Stopping: the first Ctrl-C (or SIGTERM) lets the current step finish, saves the state of that
completed step and returns ``{"interrupted": True}`` (the CLI exits 130); a second Ctrl-C quits
at once (KeyboardInterrupt) and leaves the last complete checkpoint as it was. A checkpoint
save is never cut short by either: the signals wait until the file is in place.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import math
import platform
import signal
import threading
import time
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


from . import backend, configs, io, metrics, run_checks
from .runlock import RunLock, RunLockedError
from .autograd import no_grad
from .random import Generator, default_generator, manual_seed
from .training_step import TrainingStep, ema_target, one_step

__all__ = ["TrainConfig", "Run", "TrainingStep", "train", "evaluate", "load_run_model", "model_data"]

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
                                                      "and sampling (0 = off, e.g. 0.999), warmed up "
                                                      "as min(decay, (1+n)/(10+n)) at update n",
                                                      "min": 0.0})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda"})
    seed: int = field(default=0, metadata={"help": "seeds initialisation, data order and sampling"})
    out: str = field(default="", metadata={"help": "run folder (default runs/<model>, or runs/<model>-N "
                                                      "when that holds a run or another run is using it)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --out from its checkpoint "
                                                          "(last.safetensors)"})
    log_every: int = field(default=25, metadata={"help": "steps between metrics.jsonl rows", "min": 1})
    eval_every: int = field(default=500, metadata={"help": "steps between test evaluations (0 = end only)",
                                                   "min": 0})
    val_split: float = field(default=0.0, metadata={
        "help": "hold out this fraction of the training set (drawn by --seed) for validation: the "
                "evaluations every --eval-every steps and at the end score it instead of the test "
                "set, the weights of the step with the best validation NLL are kept "
                "(best.safetensors), and the final test figures, samples and pictures are theirs "
                "(0 = off)", "min": 0.0})
    patience: int = field(default=0, metadata={
        "help": "early stopping, with --val-split: end training once this many validations in a "
                "row bring no better NLL (0 = train all --steps)", "min": 0})
    ckpt_every: int = field(default=500, metadata={"help": "steps between checkpoints (0 = end only)",
                                                   "min": 0})
    num_samples: int = field(default=64, metadata={"help": "samples in samples.png", "min": 0})
    sample_quality: bool = field(default=True, metadata={"help": "digits-FID/KID/precision-recall "
                                                                  "of samples at the end (image data)"})
    progress: bool = field(default=True, metadata={"help": "tqdm progress bar"})
    sync_batchnorm: bool = field(default=False, metadata={
        "help": "under mpiexec: batch norm statistics over every rank's examples (SyncBatchNorm) "
                "instead of each rank's own"})
    tensorboard: bool = field(default=False, metadata={
        "help": "write TensorBoard event files into the run folder (scalars, sample grids, "
                "histograms, configs; needs tensorboardX: pip install 'gmcore[tensorboard]')"})
    tensorboard_histograms: int = field(default=100, metadata={
        "help": "with --tensorboard: weight and gradient histograms every N steps (0 = none)", "min": 0})

    def __post_init__(self):
        if self.ema and not 0.0 < self.ema < 1.0:
            raise ValueError(f"ema must be 0 (off) or a decay in (0, 1), got {self.ema}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda[:N], got {self.device!r}")
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"val_split must be 0 (off) or a fraction in (0, 1), got {self.val_split}")
        if self.patience and not self.val_split:
            raise ValueError("--patience stops on the validation NLL: it needs --val-split F")
        if self.val_split and not self.eval_every:
            raise ValueError("--val-split needs --eval-every N > 0: the validations every N steps "
                             "are what picks the best step")


def _dataset_options(spec, model_cfg) -> dict:
    opts = getattr(spec.cls, "dataset_options", None)
    return opts(model_cfg) if opts else {}


class Run:
    """Everything one training run holds; built fresh or from its folder's checkpoint."""

    def __init__(self, model_name: str, tcfg: TrainConfig, mcfg=None, out=None, log=print, dp=None):
        from . import data as gdata
        from . import models, optim
        from .distributed.training import DataParallel
        from .models.base import DataInfo

        self.spec = models.get(model_name)
        self.tcfg = tcfg
        self.dp = dp if dp is not None else DataParallel()   # the ranks of mpiexec -n N, or one
        self.mcfg = mcfg if mcfg is not None else self.spec.config_cls()
        # train() picks and locks the folder; without it, --out or runs/<model>
        self.out = Path(out if out is not None else tcfg.out or Path("runs") / model_name)
        self._resumed_state = None   # a resumed second stage's checkpoint, read once (_base_model)
        self.tb = None   # the TensorBoard writer (--tensorboard; rank 0), set by train()
        base, self.base_identity = self._base_model(log)
        self.dataset_name = tcfg.dataset or self.spec.dataset
        root = tcfg.data_root or None
        if base is not None:   # a second stage trains on its base's data unless told otherwise
            bdata = self.base_identity["data"]["name"]
            if tcfg.dataset and tcfg.dataset != bdata:
                raise ValueError(f"--dataset {tcfg.dataset}: the base run {self.base_identity['run']} was "
                                 f"trained on {bdata!r}; a second stage trains on its base's data set")
            self.dataset_name = bdata
            root = root or self.base_identity.get("data_root") or None
        opts = _dataset_options(self.spec, self.mcfg)
        try:
            self.train_set = gdata.get_dataset(self.dataset_name, "train", root=root, **opts)
            self.test_set = gdata.get_dataset(self.dataset_name, "test", root=root, **opts)
        except TypeError as exc:  # the model's flags ask for a data option this data set lacks
            raise ValueError(f"{model_name} with these flags needs the data option(s) {opts}, which "
                             f"dataset {self.dataset_name!r} lacks ({exc})") from None
        self.whole_train_set = self.train_set   # what the baseline is fitted on: all of it
        self.val_set = None
        if tcfg.val_split:   # --val-split: the model fits the rest (gmcore.validation)
            self.train_set, self.val_set = gdata.validation_split(self.train_set, tcfg.val_split, tcfg.seed)
        self.info = DataInfo(shape=tuple(self.train_set.shape),
                             num_levels=int(getattr(self.train_set, "num_levels", 0) or 0),
                             name=self.dataset_name,
                             num_classes=int(getattr(self.train_set, "num_classes", 0) or 0))
        if base is not None and tuple(self.base_identity["data"]["shape"]) != self.info.shape:
            raise ValueError(f"the base run {self.base_identity['run']} models data of shape "
                             f"{tuple(self.base_identity['data']['shape'])}, but {self.dataset_name!r} "
                             f"here has {self.info.shape}")
        manual_seed(tcfg.seed)
        kw = {"base": base} if base is not None else {}
        self.model = self.spec.cls(self.mcfg, self.info, **kw)
        if self.dp.sync_batchnorm:
            from .nn import SyncBatchNorm
            self.model = SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(tcfg.device)
        self.validation = None
        if self.val_set is not None:
            if self.model.nll_kind == "none" or not getattr(self.model, "trainable", True):
                why = "has no likelihood to validate" if self.model.nll_kind == "none" else \
                    "is fitted in closed form, with no steps to choose from"
                raise ValueError(f"--val-split picks the step with the best validation NLL; {model_name} {why}")
            from .validation import Validation
            self.validation = Validation(tcfg.patience)
        # what the loader and the evaluation iterate (a second stage's latents, computed once)
        self.train_data = model_data(self.model, self.train_set)
        self.test_data = model_data(self.model, self.test_set)
        self.val_data = model_data(self.model, self.val_set) if self.val_set is not None else None
        self.optimizers = self._optimizers()
        # one schedule (warm-up, then constant or cosine) for every optimizer, on its own lr
        self.schedulers = {name: optim.lr_scheduler.LambdaLR(opt, self._lr_factor)
                           for name, opt in self.optimizers.items()}
        # warm-up min(decay, (1+n)/(10+n)): without it the average remembers the weights from
        # before the first step for thousands of steps (ActNorm's data-dependent initialisation
        # happens in step 1: maf --ema 0.999 scored 10 bits/dim)
        self.ema = optim.EMA(ema_target(self.model), decay=tcfg.ema, warmup=True) if tcfg.ema else None
        if self.dp.active:   # every rank takes every N-th row of the one-process batches
            shard = gdata.DistributedSampler(self.train_data, self.dp.world, self.dp.rank, shuffle=True,
                                             seed=tcfg.seed, drop_last=True)
            per_rank = self.dp.batch_per_rank(tcfg.batch_size)
            self.loader = gdata.DataLoader(self.train_data, batch_size=per_rank, sampler=shard,
                                           drop_last=len(shard) > per_rank, device=tcfg.device)
        else:
            self.loader = gdata.DataLoader(self.train_data, batch_size=tcfg.batch_size, shuffle=True,
                                           drop_last=len(self.train_data) > tcfg.batch_size,
                                           generator=tcfg.seed, device=tcfg.device)
        self.step = 0
        self.log_acc: dict = {}   # sums of the losses since the last metrics row, and "_n"

    def _optimizers(self) -> dict:
        """The model's named optimizers (``configure_optimizers``), or the default: one Adam
        (AdamW with --weight-decay) named "main" over every trainable parameter."""
        from . import optim

        own = getattr(self.model, "configure_optimizers", None)
        if own is None:
            params = [p for p in self.model.parameters() if p.requires_grad]   # a frozen base: none
            tc = self.tcfg
            return {"main": optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
                    if tc.weight_decay else optim.Adam(params, lr=tc.lr)}
        opts = own(self.tcfg)
        if not isinstance(opts, dict) or not opts or not all(
                isinstance(k, str) and isinstance(v, optim.Optimizer) for k, v in opts.items()):
            raise TypeError(f"{self.spec.name}.configure_optimizers must return a non-empty dict of "
                            f"names to gmcore.optim optimizers, got {opts!r}")
        seen = {}
        for name, opt in opts.items():
            for group in opt.param_groups:
                for p in group["params"]:
                    if id(p) in seen:
                        raise ValueError(f"{self.spec.name}: a parameter is in both the {seen[id(p)]!r} "
                                         f"and the {name!r} optimizers")
                    seen[id(p)] = name
        return opts

    def _base_model(self, log):
        """(base model, identity) of a second stage, or (None, None). A new run loads
        ``--base-run``; a resumed one rebuilds the base from its own checkpoint (the weights it
        started with, whatever happened to the base run since)."""
        from .models import stages

        kinds = self.spec.cls.base_kinds
        if not kinds:
            return None, None
        ckpt = self.out / "last.safetensors"
        if self.tcfg.resume and ckpt.exists():
            # kept for restore(), which would otherwise read and verify the file a second time
            state = self._resumed_state = io.load_checkpoint(self.out / "last", device=self.tcfg.device)
            identity = state.get("base")
            if not isinstance(identity, dict):
                raise io.CheckpointError(f"{ckpt}: a {self.spec.name} checkpoint must record its base run "
                                         "(field 'base')")
            base = stages.build_base(identity, source=str(ckpt))
            load_weights(base, {k[len("base."):]: v for k, v in state["model"].items()
                                if k.startswith("base.")}, ckpt)
            stages.note_base_changes(identity, log)
            return base.to(self.tcfg.device), identity
        path = getattr(self.mcfg, "base_run", "")
        if not path:
            raise ValueError(f"{self.spec.name} is a second stage: name the finished run it trains on "
                             "with --base-run RUN (e.g. --base-run runs/vqvae)")
        return stages.load_base_run(path, self.spec.name, kinds, device=self.tcfg.device, log=log)

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
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sch.state_dict() for name, sch in self.schedulers.items()},
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": default_generator.get_state(),
            "loader": self.loader.state_dict(),
            "log_acc": dict(self.log_acc),
            "world_size": self.dp.world,
            **({"validation": self.validation.state_dict()} if self.validation else {}),
            **({"base": self.base_identity} if self.base_identity else {}),
        }

    def save(self) -> Path:
        """Write ``last.safetensors`` (and its readable copy ``last.json``); returns the former.
        Under mpiexec the ranks first check that their weights agree; rank 0 writes."""
        if self.dp.active:
            self.dp.agree("parameters (the replicas diverged)", _weights_digest(self.model))
        path = self.out / "last.safetensors"
        if self.dp.is_main:
            path = io.save_checkpoint(self.out / "last", self.state())[0]
        return path

    def restore(self) -> None:
        """Load the folder's checkpoint after checking every field and tensor against this run
        (CheckpointError naming the file and the field or tensor when one does not fit)."""
        from . import models

        file = self.out / "last.safetensors"
        state, self._resumed_state = self._resumed_state, None
        if state is None:
            state = io.load_checkpoint(self.out / "last", device=self.tcfg.device)
        run_checks.check_run_fields(state, file, known_models=models.names())
        if state["model_name"] != self.spec.name:
            raise ValueError(f"{file} holds a {state['model_name']!r} run, not {self.spec.name!r}")
        saved = state["model_config"]
        now = configs.to_dict(self.mcfg)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            raise ValueError(f"cannot resume {self.out}: model config differs from the checkpoint's in "
                             + ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in diff))
        if self.ema is not None and state.get("ema") is None:
            raise ValueError(f"cannot resume {self.out} with --ema: the checkpoint has no EMA state")
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.dp.world:
            raise ValueError(f"cannot resume {self.out} on {self.dp.world} rank(s): its checkpoint was "
                             f"written by a run on {saved_world} (the data loader's position is per "
                             f"rank); resume it with {'mpiexec -n %d ' % saved_world if saved_world > 1 else ''}"
                             "gmcore train ... --resume")
        saved_tc = state["train_config"]
        saved_split = float(saved_tc.get("val_split", 0.0) or 0.0)
        if saved_split != self.tcfg.val_split or (saved_split and saved_tc.get("seed") != self.tcfg.seed):
            raise ValueError(f"cannot resume {self.out} with --val-split {self.tcfg.val_split} and --seed "
                             f"{self.tcfg.seed}: it was trained with {saved_split} and {saved_tc.get('seed')} "
                             "(the two decide which examples it fits)")
        if self.validation is not None and not isinstance(state.get("validation"), dict):
            raise io.CheckpointError(f"{file}: a --val-split run's checkpoint must hold its validation "
                                     "record (field 'validation')")
        if sorted(state["optimizers"]) != sorted(self.optimizers):
            raise ValueError(f"cannot resume {self.out}: the checkpoint holds the optimizers "
                             f"{sorted(state['optimizers'])}, the model has {sorted(self.optimizers)}")
        run_checks.check_run_tensors(state, file, self.model, self.optimizers, self.ema)
        self.model.load_state_dict(state["model"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
            self.schedulers[name].load_state_dict(state["schedulers"][name])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        default_generator.set_state(state["rng"])
        self.loader.load_state_dict(state["loader"])
        self.step = state["step"]
        self.log_acc = dict(state.get("log_acc", {}))
        if self.validation is not None:
            self.validation.load_state_dict(state["validation"])


def _weights_digest(model) -> str:
    import hashlib
    h = hashlib.sha256()
    for name, t in sorted(model.named_parameters()):   # buffers are rank 0's (broadcast each step)
        h.update(name.encode())
        h.update(backend.to_device(t.data, "cpu").tobytes())
    return h.hexdigest()


def _holds_run(folder: Path) -> str:
    """The file that makes ``folder`` a run's (config.json, written before the first step, or a
    checkpoint), or '' when it holds none."""
    for name in ("config.json", "last.safetensors", "last.json"):
        if (folder / name).exists():
            return name
    return ""


def _claim_out(model_name: str, tcfg: TrainConfig, log) -> tuple[Path, RunLock]:
    """The run folder, locked for this process: ``--out`` (or ``runs/<model>`` on --resume), which
    must hold no run unless resuming; otherwise the first free default folder."""
    if not tcfg.out and not tcfg.resume:
        return _default_out(model_name, log)
    out = Path(tcfg.out) if tcfg.out else Path("runs") / model_name
    lock = RunLock(out, log=log).acquire()    # RunLockedError names the folder and the holder
    held = _holds_run(out)
    if held and not tcfg.resume:
        lock.release()
        raise FileExistsError(f"{out} already holds a run ({held}); pass --resume to continue it or "
                              "--out to start a new one")
    return out, lock


def _default_out(model_name: str, log=print) -> tuple[Path, RunLock]:
    """``runs/<model>``, or when that holds a run or another run has it locked, the first free of
    ``runs/<model>-2``, ``-3``, ... (a run is never overwritten, and the command that started it
    still works when typed again); returned locked. The check is repeated under the lock, so two
    runs started together get two folders."""
    base = Path("runs") / model_name
    for n in itertools.count(1):
        out = base if n == 1 else base.with_name(f"{model_name}-{n}")
        if _holds_run(out):
            continue
        try:
            lock = RunLock(out, log=log).acquire()
        except RunLockedError:
            continue
        if not _holds_run(out):
            return out, lock
        lock.release()


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


# What one "dimension" of a data set is, by its registry kind (text: a character, audio: a sample);
# images and points are quoted per dimension.
_UNIT_OF_KIND = {"text": "char", "audio": "sample"}


def bits_unit(dataset_name: str) -> str:
    """``"dim"``, ``"char"`` or ``"sample"``: what a data set's bits are quoted per.

    >>> bits_unit("digits"), bits_unit("text"), bits_unit("audio")
    ('dim', 'char', 'sample')
    """
    from .data import DATASETS

    info = DATASETS.get(dataset_name)
    return _UNIT_OF_KIND.get(info.kind, "dim") if info is not None else "dim"


def eval_seed(seed: int, step: int) -> int:
    """The seed of a run's evaluation at ``step`` (its own stream: when and how often evaluation
    runs never changes the training path); ``gmcore eval`` uses it to reproduce the figure."""
    return seed * 1_000_003 + step


def model_data(model, dataset):
    """What ``model`` trains and is evaluated on for the image (or text ...) split ``dataset``: its
    ``prepare_data(dataset)`` when it has one (a second stage: the examples with their latents),
    else ``dataset`` itself."""
    prepare = getattr(model, "prepare_data", None)
    return prepare(dataset) if prepare is not None else dataset


def evaluate(model, dataset, batch_size: int = 256, seed: int = 0, device="cpu", options=None,
             dp=None) -> dict:
    """Test NLL of ``model`` on ``dataset`` (the model's ``nll``) in nats per example and in bits
    per dimension, character or sample: ``test_bits`` with its ``unit`` ("dim", "char",
    "sample"), and the same figure under its own name (``test_bits_per_dim``, ...). On continuous
    data (``num_levels == 0``: the 2-D toys) the NLL is a density's, in nats, and bits per
    dimension mean nothing: only ``test_nll_nats`` with ``unit`` "nats". ``options``: values of
    the model's ``EvalOptions`` (``gmcore eval RUN --flag``), config fields that replace the
    run's for this evaluation and are recorded in the result beside the figure they shaped."""
    options = dict(options or {})
    saved = model.config
    if options:
        model.config = dataclasses.replace(saved, **options)
    try:
        return _evaluate(model, dataset, batch_size, seed, device, options, dp)
    finally:
        model.config = saved


def _evaluate(model, dataset, batch_size, seed, device, options, dp) -> dict:
    from .data import DataLoader

    if model.nll_kind == "none":   # no likelihood (GANs): nothing to evaluate on the test split
        return {"nll_kind": "none", "unit": "none"}
    gen = Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    sharded = dp is not None and dp.active
    if sharded:   # rank r: rows r, r + N, ... of each one-process batch, with their noise
        shard = _EveryNth(len(dataset), dp.rank, dp.world)
        loader = DataLoader(dataset, batch_size=batch_size // dp.world, sampler=shard, device=device)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, device=device)
    with no_grad():
        for k, batch in enumerate(loader):
            rows = min(batch_size // dp.world * dp.world, len(dataset) - k * (batch_size // dp.world * dp.world)) \
                if sharded else 0
            with gen.sharded(dp.rank, dp.world, rows) if sharded else contextlib.nullcontext():
                nll = model.nll(batch, generator=gen)
            total += float(nll.sum().item())
            count += nll.shape[0]
    model.train(was_training)
    if sharded:
        total, count = dp.reduce_sum(total, count)
    nats = total / max(count, 1)
    if model.data.num_levels == 0:
        return {"test_nll_nats": nats, "unit": "nats", "nll_kind": model.nll_kind, **options}
    bits = metrics.bits_per_dim(nats, model.data.dims)
    unit = bits_unit(model.data.name or getattr(dataset, "name", ""))
    return {"test_nll_nats": nats, f"test_bits_per_{unit}": bits, "test_bits": bits, "unit": unit,
            "nll_kind": model.nll_kind, **options}


class _EveryNth:
    """Indices rank, rank + world, ... of range(n): a rank's share of an evaluation, no padding."""

    def __init__(self, n, rank, world):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class _StopSignals:
    """While training: the first SIGINT/SIGTERM asks the loop to stop after the current step;
    a second one raises KeyboardInterrupt at once. Handlers can only be set in the main thread;
    elsewhere nothing is installed and the loop's ``except KeyboardInterrupt`` does the work."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None      # the first signal received
        self.hard = False       # a second one came: quit without saving
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            return
        self.hard = True
        raise KeyboardInterrupt

    def __enter__(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                old = signal.getsignal(s)
                if old is None or old == signal.SIG_IGN:   # set outside Python, or meant to be ignored
                    continue
                self._previous[s] = old
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._previous.items():
            signal.signal(s, old)
        self._previous = {}


def train(model_name: str, tcfg: TrainConfig, mcfg=None, log=print) -> dict:
    """Train ``model_name`` as configured; returns the final metrics (also in metrics.json), or
    ``{"interrupted": True, "step": N}`` after a Ctrl-C (the checkpoint of step N is saved).

    The run folder is locked while this runs: another run on it raises
    :class:`gmcore.runlock.RunLockedError` naming the holder's PID and host.

    Under ``mpiexec -n N`` each process is one rank of a data-parallel run (see
    :mod:`gmcore.distributed.training`): ``--batch-size`` is the global batch, rank 0 alone
    writes the folder and logs, and a failure on any rank ends them all.
    """
    from .distributed.training import for_training

    if tcfg.tensorboard:   # before anything is claimed or trained
        from .tensorboard import require
        require()
    dp = for_training(tcfg)
    if not dp.active:
        return _train_claimed(model_name, tcfg, mcfg, log, dp)
    if not dp.is_main:
        log = _quiet
    try:
        dp.agree("model and configuration", {"model": model_name, "train": configs.to_dict(tcfg),
                                             "model_config": configs.to_dict(mcfg) if mcfg is not None else None})
        dp.batch_per_rank(tcfg.batch_size)
        from .distributed.training import local_device
        tcfg = dataclasses.replace(tcfg, device=local_device(tcfg.device, dp.rank))   # a GPU per rank
        return _train_claimed(model_name, tcfg, mcfg, log, dp)
    except Exception as exc:
        dp.fail(exc, log)
        raise


def _quiet(*args, **kwargs) -> None:
    """The log of ranks other than 0: they train in silence."""


def _train_claimed(model_name, tcfg, mcfg, log, dp) -> dict:
    if not dp.is_main:   # rank 0 claims the folder; the others learn its name
        return _train_in(Path(dp.share_text("")), model_name, tcfg, mcfg, log, dp)
    out, lock = _claim_out(model_name, tcfg, log)
    try:
        dp.share_text(str(out))
        return _train_in(out, model_name, tcfg, mcfg, log, dp)
    except Exception:
        if not tcfg.resume:
            _unclaim(out)
        raise
    finally:
        lock.release()


def _unclaim(out: Path) -> None:
    """A new run that failed before its first step (a bad kernel override, data that does not
    fit the model) gives its folder back, so that the next attempt gets it instead of ``-2``.
    A run that took any step keeps everything it wrote."""
    if any((out / name).exists() for name in ("last.safetensors", "last.json")):
        return
    log_path = out / "metrics.jsonl"
    if log_path.exists() and log_path.stat().st_size:
        return
    for name in ("config.json", "metrics.jsonl"):
        (out / name).unlink(missing_ok=True)


def _train_in(out: Path, model_name: str, tcfg: TrainConfig, mcfg, log, dp) -> dict:
    main = dp.is_main   # under mpiexec, rank 0 alone writes into the folder
    removed = io.remove_temp_files(out) if main else []   # safe: the folder is locked by us
    if removed:
        log(f"removed {len(removed)} temporary file(s) left by an interrupted save: "
            + ", ".join(p.name for p in removed))
    run = Run(model_name, tcfg, mcfg, out=out, log=log, dp=dp)
    log(f"run folder: {out}")
    if tcfg.resume and ((out / "last.safetensors").exists() or (out / "last.json").exists()):
        run.restore()
        if run.step >= tcfg.steps and (run.step > tcfg.steps or (out / "metrics.json").exists()):
            # nothing to train: a re-evaluation would only append a duplicate test row
            raise ValueError(f"{out} is already at step {run.step}: use a larger --steps to continue it "
                             f"(--steps {tcfg.steps} asks for no more; gmcore eval {out} evaluates it)")
        if run.validation is not None and run.validation.exhausted:
            v = run.validation
            raise ValueError(f"{out} stopped early at step {run.step}: {v.bad_evals} validations without a "
                             f"better NLL than step {v.best_step}'s; a larger --patience (or 0) trains on")
        log(f"resumed {out} at step {run.step}")
    elif tcfg.resume and not (out / "config.json").exists():
        raise FileNotFoundError(f"nothing to resume in {out}: it holds no run (no last.safetensors)")
    else:
        if tcfg.resume:
            log(f"{out} holds no checkpoint yet (its run stopped before the first): starting at step 0")
        if hasattr(run.model, "prepare"):
            run.model.prepare(run.train_set)  # e.g. PPCA's closed-form fit
    if not getattr(run.model, "trainable", True):
        log(f"{model_name}: fitted in closed form; no optimizer steps")
        run.step = tcfg.steps
    if main:
        io.atomic_write_text(out / "config.json", json.dumps({
            "model": model_name, "train": configs.to_dict(tcfg), "model_config": configs.to_dict(run.mcfg),
            "data": run.dataset_name, **({"base_run": run.base_identity} if run.base_identity else {}),
            **dp.describe(tcfg.batch_size), "gmcore": _version(), "python": platform.python_version()},
            indent=1))
    log_path = out / "metrics.jsonl"
    # Keep only the rows up to the checkpoint: later ones belong to steps that will be redone.
    rows = [r for r in _read_log(log_path) if r.get("step", 0) <= run.step] if tcfg.resume else []
    if tcfg.resume and main:
        from .sample_progress import trim_frames
        trim_frames(out, run.step)
    if main:
        io.atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))
    if main and tcfg.tensorboard:
        from .tensorboard import RunWriter
        run.tb = RunWriter(out, json.loads((out / "config.json").read_text("utf-8")), start_step=run.step)
    with open(log_path, "a", encoding="utf-8") if main else contextlib.nullcontext() as logf, \
            run.tb if run.tb is not None else contextlib.nullcontext():
        def write_row(row):
            rows.append(row)
            if logf is not None:
                logf.write(json.dumps(row) + "\n")
                logf.flush()
            if run.tb is not None:
                run.tb.row(row)

        stopped = _loop(run, write_row, log)
        if stopped is not None:
            return stopped
        picked = _select_best(run, log) if run.validation is not None else {}
        final = _run_eval(run, write_row, step=picked.get("selected_step", run.step))
    result = {"model": model_name, "dataset": run.dataset_name, "step": run.step, **final, **picked}
    if main:   # the baseline, samples and pictures: rank 0's alone
        result.update(_baseline(run))   # fitted on the whole training set, validation split included
        from .progress import show_progress
        with show_progress(tcfg.progress):   # bars over long samplers, as the steps' bar
            result.update(_pictures(run, rows))
        if hasattr(run.model, "test_metrics"):   # model-specific figures, as `gmcore eval` gives them
            with _sampling(run):
                result.update(run.model.test_metrics(run.test_set) or {})
        io.atomic_write_text(out / "metrics.json", json.dumps(result, indent=1))
        log(json.dumps(result, indent=1))
    dp.barrier()
    return result


def _run_eval(run, write_row, step=None) -> dict:
    """Test figures of the run's weights; ``step``: the step they are from (default the current
    one; a --val-split run's final evaluation: the selected step), which seeds the evaluation as
    ``gmcore eval`` of that step's checkpoint does."""
    step = run.step if step is None else step
    res = _score(run, run.test_data, step)
    write_row({"step": step, "split": "test", **res})
    grid = None
    if _shows_progress(run) and run.dp.is_main:
        grid = _progress_frame(run)
    if run.tb is not None and len(run.info.shape) == 3 and run.tcfg.num_samples > 0:
        run.tb.image("samples", grid if grid is not None else _tensorboard_grid(run), run.step)
        run.tb.flush()
    return res


def _score(run, data, step) -> dict:
    """``evaluate`` of the run's weights (the EMA average when kept) on ``data`` (its test or
    validation split), with the evaluation seed of ``step``."""
    ctx = run.ema.average_parameters() if run.ema else contextlib.nullcontext()
    with ctx:
        return evaluate(run.model, data, seed=eval_seed(run.tcfg.seed, step), device=run.tcfg.device,
                        dp=run.dp)


def _figure(res) -> str:
    """An evaluation's NLL for the log: nats on continuous data, else bits per unit."""
    return f"{res['test_nll_nats']:.4f} nats" if res["unit"] == "nats" else \
        f"{res['test_bits']:.4f} bits/{res['unit']}"


def _tensorboard_grid(run):
    """A grid of samples for TensorBoard at an evaluation: a fixed seed, and gmcore's global
    RNG put back after, so that logging never changes the training path."""
    from .plots import image_grid

    state = default_generator.get_state()
    try:
        with _sampling(run):
            x = run.model.sample(min(run.tcfg.num_samples, 64),
                                 generator=Generator(device=run.tcfg.device).manual_seed(run.tcfg.seed + 1))
    finally:
        default_generator.set_state(state)
    return image_grid(x)


def _shows_progress(run) -> bool:
    """Models judged by their samples (no likelihood) on images get a sample grid at every
    evaluation and a row of progress.png (gmcore.sample_progress)."""
    return run.model.nll_kind == "none" and len(run.info.shape) == 3 and run.tcfg.num_samples > 0


def _progress_frame(run):
    """Write the evaluation's samples.png and progress.png row; returns the grid (H, W, C)."""
    from .plots import image_grid, save_image_grid
    from .sample_progress import FRAME, record_frame

    tcfg = run.tcfg
    with _sampling(run):
        fixed = run.model.sample(FRAME, generator=Generator(device=tcfg.device).manual_seed(tcfg.seed))
        grid = run.model.sample(tcfg.num_samples, generator=Generator(device=tcfg.device).manual_seed(tcfg.seed + 1))
    record_frame(run.out, run.step, fixed)
    save_image_grid(grid, run.out / "samples.png")
    return image_grid(grid)


def _loop(run, write_row, log) -> dict | None:
    """The optimizer steps up to ``steps`` and the checkpoint after them; returns
    ``{"interrupted": True, "step": N}`` when stopped early (the state of step N saved), else None.

    Whatever stops it, the saved state is that of a completed step: a first Ctrl-C is noted and
    acted on between steps; a KeyboardInterrupt raised inside a step (a second Ctrl-C, or any
    KeyboardInterrupt when train() runs outside the main thread) before the step's first
    optimizer update rewinds the data loader, the RNG and the model's buffers to the step's start
    and saves
    (parameters move only in the update; ActNorm's data-dependent start redoes itself on the same
    batch); one inside the update saves
    nothing (the model is half-updated) and propagates, like a second Ctrl-C.
    """
    tcfg = run.tcfg
    bar = _progress(tcfg, run.step)
    batches = _batches(run.loader)
    model = run.model
    model.train()
    step, snapshot, interrupted, stopping = None, None, False, False
    t0 = time.perf_counter()
    with _StopSignals() as stop:
        try:
            # (a signal during the periodic save ends the loop here, before the next step)
            while run.step < tcfg.steps and not (stopping := run.dp.any(stop.requested)):
                # What this step consumes or moves before its update (the batch, the RNG, the
                # buffers a loss updates: running statistics, EMA codebooks, step counters); put
                # back if the step is interrupted before its update.
                snapshot = (run.loader.state_dict(), default_generator.get_state(),
                            [(buf, buf.data.copy()) for buf in model.buffers()])
                step = TrainingStep(run, batches, run.step)
                run.dp.broadcast_buffers(model)
                with run.dp.sharded_randomness(tcfg.batch_size):
                    logs = one_step(model, next(batches), step)
                step.phase = "update"   # (a step that updated nothing is over too)
                for sch in run.schedulers.values():
                    sch.step()
                if run.ema:
                    run.ema.update()
                acc = run.log_acc
                for k, v in logs.items():
                    acc[k] = acc.get(k, 0.0) + float(v)
                acc["_n"] = acc.get("_n", 0) + 1
                run.step += 1
                step = None
                if run.step % tcfg.log_every == 0 or run.step == tcfg.steps:
                    n = acc.pop("_n")
                    row = {"step": run.step, "split": "train", **_learning_rates(run),
                           **{k: v / n for k, v in run.dp.mean_logs(acc).items()},
                           "sec_per_step": (time.perf_counter() - t0) / n,
                           # under mpiexec: of which averaging the gradients (rank 0's)
                           **({"comm_sec_per_step": run.dp.take_comm_seconds() / n} if run.dp.active else {})}
                    write_row(row)
                    if bar is not None:
                        bar.set_postfix({k: f"{row[k]:.4g}" for k in list(logs)[:2]})
                    run.log_acc, t0 = {}, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if run.tb is not None and tcfg.tensorboard_histograms and \
                        run.step % tcfg.tensorboard_histograms == 0:
                    run.tb.histograms(model, run.step)
                stopping = run.dp.any(stop.requested)   # a Ctrl-C on any rank stops them all here
                if stopping:
                    break
                if run.validation is not None:
                    if run.step % tcfg.eval_every == 0 or run.step == tcfg.steps:
                        _validate(run, write_row, log)
                        if run.validation.exhausted:
                            v = run.validation
                            log(f"early stopping at step {run.step}: {v.bad_evals} validations without "
                                f"a better NLL (--patience {v.patience}); the best was at step {v.best_step}")
                            break
                elif tcfg.eval_every and run.step % tcfg.eval_every == 0 and run.step < tcfg.steps:
                    res = _run_eval(run, write_row)
                    if res["unit"] != "none":
                        log(f"step {run.step}: test {_figure(res)} ({res['nll_kind']})")
                if tcfg.ckpt_every and run.step % tcfg.ckpt_every == 0:
                    run.save()
        except KeyboardInterrupt:
            if stop.hard or (step is not None and step.phase == "update"):
                log(f"quit during step {run.step + 1} without saving; {run.out} keeps its last "
                    "complete checkpoint")
                raise
            if step is not None:   # interrupted before its first update: rewind the step
                run.loader.load_state_dict(snapshot[0])
                default_generator.set_state(snapshot[1])
                for buf, saved in snapshot[2]:
                    buf.data[...] = saved
            interrupted = True
        finally:
            if bar is not None:
                bar.close()
        if stopping and not interrupted:
            interrupted = True
            what = signal.Signals(stop.signum).name if stop.requested else "a signal on another rank"
            log(f"{what}: stopping after step {run.step}; saving its checkpoint (Ctrl-C again quits "
                "without saving)")
        path = run.save()   # SIGINT/SIGTERM wait until the file is in place
    if interrupted or stopping:
        log(f"interrupted at step {run.step}: checkpoint saved to {path}; continue with --resume")
        return {"interrupted": True, "step": run.step}
    return None


def _validate(run, write_row, log) -> None:
    """Score the validation split (a "val" row); at a new best, write ``best.safetensors``."""
    res = _score(run, run.val_data, run.step)
    write_row({"step": run.step, "split": "val",
               **{(f"val_{k[len('test_'):]}" if k.startswith("test_") else k): v for k, v in res.items()}})
    v = run.validation
    if v.record(run.step, res["test_nll_nats"]):
        if run.dp.is_main:
            io.save_checkpoint(run.out / "best", run.state())
        run.dp.barrier()   # the file is in place before any rank may read it
    log(f"step {run.step}: validation {_figure(res)} (best at step {v.best_step})")


def _select_best(run, log) -> dict:
    """Load the weights of the best validation step (``best.safetensors``) into the run for
    its final test evaluation, samples and pictures; returns what metrics.json records of it."""
    v = run.validation
    picked = {"val_split": run.tcfg.val_split, "val_examples": len(run.val_set),
              "stopped_early": v.exhausted}
    if v.best_step is None:   # no validation ran (--steps 0): the weights as they are
        log("no validation ran: the final figures are of the last weights")
        return {**picked, "selected_step": run.step}
    file = run.out / "best.safetensors"
    best = io.load_checkpoint(run.out / "best", device=run.tcfg.device)
    run_checks.check_run_fields(best, file)
    run_checks.check_run_tensors(best, file, run.model, ema=run.ema)
    load_weights(run.model, best["model"], file)
    if run.ema is not None:
        run.ema.load_state_dict(best["ema"])
    if best["step"] != v.best_step:
        # only after a crash past a new best and a resume that did not find it again (a GPU's
        # nondeterminism): the file is the truth, the record's NLL is another step's
        log(f"{file} holds step {best['step']}, the validation record step {v.best_step}: the final "
            f"figures are of step {best['step']}")
        return {**picked, "selected_step": best["step"]}
    log(f"the final figures are of step {v.best_step}, the best validation NLL "
        f"({v.best_nll:.4f} nats per example)")
    return {**picked, "selected_step": v.best_step, "val_nll_nats": v.best_nll}


def _learning_rates(run) -> dict:
    """The log row's learning rates: ``lr`` for one optimizer, ``lr_<name>`` for several."""
    if list(run.schedulers) == ["main"]:
        return {"lr": run.schedulers["main"].get_last_lr()[0]}
    return {f"lr_{name}": sch.get_last_lr()[0] for name, sch in run.schedulers.items()}


def _baseline(run) -> dict:
    """Per-pixel independent categorical NLL on the same split (image data with levels); on
    continuous vectors (the 2-D toys) a 10-component Gaussian mixture fitted by EM (nats)."""
    from .data._images import ImageArrayDataset

    if run.info.num_levels == 0 and len(run.info.shape) == 1:
        from .baselines import gmm_baseline_nll
        nats = gmm_baseline_nll(run.whole_train_set.arrays[0], run.test_set.arrays[0], k=10, seed=run.tcfg.seed)
        return {"baseline": "10-component full-covariance Gaussian mixture (EM)",
                "baseline_gmm10_nll_nats": nats}
    if not isinstance(run.whole_train_set, ImageArrayDataset) or not run.info.num_levels:
        return {}
    nats = metrics.categorical_baseline_nll(run.whole_train_set.arrays[0], run.test_set.arrays[0],
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

    points = run.info.num_levels == 0 and tuple(run.info.shape) == (2,)
    train_rows = [r for r in rows if r.get("split") == "train"]
    # several networks log several losses (a GAN's d_loss, g_loss): plot each
    keys = ("loss",) if not train_rows or "loss" in train_rows[-1] else \
        tuple(k for k in train_rows[-1] if k.endswith("loss")) or ("loss",)
    save_loss_curve(rows, out / "loss_curve.png", keys=keys,
                    eval_key="test_nll_nats" if points else "test_bits")
    gen = Generator(device=tcfg.device).manual_seed(tcfg.seed)
    if points:  # 2-D densities: samples over the data, the density map and its mass on the grid
        from .density2d import SCATTER_SAMPLES, points_report
        with _sampling(run):
            res.update(points_report(run.model, run.test_set.arrays[0], out, gen, device=tcfg.device,
                                     num_samples=max(tcfg.num_samples, SCATTER_SAMPLES)
                                     if tcfg.num_samples else 0,
                                     modes=getattr(run.test_set, "modes", None)))
            if hasattr(run.model, "save_pictures"):   # model-specific extras, e.g. a score field
                res.update(run.model.save_pictures(out, Generator(device=tcfg.device).manual_seed(tcfg.seed),
                                                   test_set=run.test_set) or {})
        return res
    if len(run.info.shape) != 3 and tcfg.num_samples and hasattr(run.model, "save_samples"):
        with _sampling(run):  # text, audio: the model writes its own format
            res.update(run.model.save_samples(out, run.train_set, gen) or {})
        return res
    if len(run.info.shape) != 3 or not (tcfg.num_samples or tcfg.sample_quality):
        return res
    with _sampling(run):
        samples, quality = final_samples(run.model, run.test_set, run.dataset_name, tcfg.seed,
                                         tcfg.num_samples, tcfg.sample_quality, tcfg.device)
    if tcfg.num_samples:
        save_image_grid(samples[:tcfg.num_samples], out / "samples.png")
    res.update(quality)
    if tcfg.num_samples and hasattr(run.model, "save_pictures"):
        with _sampling(run):  # model-specific extras, e.g. Glow's temperature strip
            res.update(run.model.save_pictures(out, Generator(device=tcfg.device).manual_seed(tcfg.seed),
                                               test_set=run.test_set) or {})
    return res


def final_samples(model, test_set, dataset_name: str, seed: int, num_samples: int, quality: bool,
                  device="cpu") -> tuple:
    """(samples, quality figures) as a run draws them at its end: ``num_samples`` for the grid,
    at least QUALITY_SAMPLES when ``quality`` is asked and the data are digits (digits-FID,
    KID, precision/recall against ``test_set``), all from ``Generator(seed)``. ``gmcore eval``
    calls it with the run's settings and so reproduces metrics.json. The caller chooses the
    weights (EMA), eval mode and no_grad."""
    import numpy as np

    quality = quality and dataset_name == "digits"
    n = max(num_samples, QUALITY_SAMPLES if quality else 0)
    if n == 0:
        return None, {}
    samples = model.sample(n, generator=Generator(device=device).manual_seed(seed))
    if not quality:
        return samples, {}
    from . import feature_metrics
    from .autograd import enable_grad

    # a class-conditional model's samples cycle through the classes: 0, 1, 2, ...
    labels = np.arange(n) % model.num_classes if getattr(model, "class_conditional", False) else None
    # The feature classifier trains on first use (a cache miss): autograd must be on even though
    # callers draw the samples under no_grad.
    with enable_grad():
        return samples, feature_metrics.sample_quality(samples, test_set, labels=labels)


def load_run_model(path, device="cpu"):
    """(model, state) from a run checkpoint (``runs/vae/last`` or its .json); EMA weights are
    swapped in when the run kept them."""
    from . import configs as cf
    from . import models
    from .models.base import DataInfo

    state = io.load_checkpoint(path, device=device)
    if state.get("kind") != "gmcore-run":
        raise ValueError(f"{path} is not a gmcore training checkpoint")
    try:
        spec = models.get(state["model_name"])
    except KeyError as exc:  # a run of a model this gmcore lacks (renamed, or a newer version)
        raise io.CheckpointError(f"{path}: {exc.args[0]}") from None
    file = io._paths(path)[0]
    run_checks.check_run_fields(state, file)   # every field's form, before anything reads it
    mcfg = cf.from_mapping(spec.config_cls, state["model_config"], source=str(path))
    d = state["data"]
    kw = {}
    if spec.cls.base_kinds:   # a second stage: its base's architecture, the weights below
        from .models.stages import build_base
        if not isinstance(state.get("base"), dict):
            raise io.CheckpointError(f"{file}: a {spec.name} checkpoint must record its base run (field 'base')")
        kw["base"] = build_base(state["base"], source=str(file))
    model = spec.cls(mcfg, DataInfo(shape=tuple(d["shape"]), num_levels=d["num_levels"], name=d["name"],
                                    num_classes=d.get("num_classes", 0)), **kw)
    ema = None
    if state.get("ema"):
        from .optim import EMA
        ema = EMA(ema_target(model), decay=state["train_config"].get("ema") or 0.999)
    # dtype, shape and finiteness of every tensor against the model's own (no silent casts)
    run_checks.check_run_tensors(state, file, model, ema=ema)
    load_weights(model, state["model"], path)
    model.to(device)
    if ema is not None:
        ema.load_state_dict(state["ema"])
        ema.copy_to(ema_target(model))
    model.eval()
    return model, state


def load_weights(model, state_dict, path) -> None:
    """``model.load_state_dict`` whose failure (a tensor of the wrong shape, a missing key)
    names the checkpoint it came from."""
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise io.CheckpointError(f"{path}: its weights do not fit the {type(model).__name__} model: "
                                 + " ".join(str(exc).split())) from exc


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



