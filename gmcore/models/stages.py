"""Two-stage training: a model trained on the latents of a finished run (``--base-run RUN``).

The first stage (a *base model*, e.g. ``vqvae``) declares what its latents are with a class
attribute ``latent_kind`` (one kind) or ``latent_kinds`` (a tuple, for a base that offers several)
and the methods each kind promises (:func:`latent_kinds` reads either). The kinds:

* ``"vq-codes"``: grids of codebook indices, one per level, the top (coarsest) level first.
  ``code_levels`` (a tuple of ``(num_codes, h, w)``), ``encode(x) -> tuple`` of int64 (B, h, w)
  grids, ``decode(codes) -> images`` in [0, 1], ``recon_nll(x, codes) -> (B,)`` nats of
  ``-log p(x | z)``, ``prior_nats()`` (the uniform prior's cost).
* ``"continuous"``: real-valued latents, for a model that diffuses them (``latent-diffusion``).
  ``continuous_latent_shape`` (one example's latent: ``(d,)`` for a vector, ``(C, h, w)`` for a
  grid), ``encode_latents(x) -> Tensor`` (B, *continuous_latent_shape), deterministic, and
  ``decode_latents(z) -> images`` in [0, 1]. ``vae``: the posterior mean (pushed through the
  posterior flow when there is one), decoded to the decoder's mean; ``vqvae`` / ``vqvae2``: the
  encoder's output before quantization (Rombach et al.'s "VQ-reg" autoencoder: the decoder
  quantizes to the nearest codes, then decodes).
* ``"diffusion"``: a diffusion model's process, for a second stage that learns on its noisy
  examples (``noisy-classifier``). ``diffusion`` (its
  :class:`~gmcore.models.diffusion.gaussian_diffusion.GaussianDiffusion`, whose ``schedule`` the
  second stage trains on), ``diffusion_shape`` (C, H, W) of one diffused example,
  ``to_diffusion(x) -> x0`` (images in [0, 1] to the diffused space) and ``sample(n, generator,
  guidance=s, label=y, classifier=model)`` (classifier-guided samples). ``ddpm`` and its
  subclasses.
* ``"audio-density"``: an autoregressive density over audio codes, for a student distilled from
  it (``parallel-wavenet``). ``nll((codes,))``, ``sample(n, generator, length=L)``,
  ``config.output`` (the student needs ``"dlml"``) and the layers ``inp``, ``stack`` and
  ``_head``, which the student runs on continuous (interpolated) inputs. ``wavenet``.

The second stage declares ``base_kinds`` (the kinds it can train on) and a Config field
``base_run``; it is built as ``Model(config, data, base=base_model)`` and keeps the base as
``self.base``, frozen (see :class:`gmcore.models.GenerativeModel`). The training loop loads the
base with :func:`load_base_run`, which checks the kind, swaps in the EMA weights when the base
run kept them, and returns the base's identity (path, checkpoint SHA-256, model, step) for the
new run's ``config.json``. The base's weights then live inside the second stage's checkpoint, so
``gmcore sample`` and ``gmcore eval`` of the second stage never read the base run again (it may
move or train further without changing the second stage's results): :func:`build_base` rebuilds
the base's architecture from the identity recorded in the checkpoint.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["load_base_run", "build_base", "encode_dataset", "base_identity", "note_base_changes",
           "latent_kinds"]


def _checkpoint_file(path) -> Path:
    """The checkpoint file of a run folder or checkpoint path; FileNotFoundError naming it."""
    p = Path(path)
    stem = p / "last" if p.is_dir() else (p.with_suffix("") if p.suffix in (".json", ".safetensors") else p)
    file = stem.with_name(stem.name + ".safetensors")
    if not file.exists():
        if not p.exists():
            raise FileNotFoundError(f"--base-run {path}: no such run folder")
        raise FileNotFoundError(f"--base-run {path}: no finished run there (no {file.name}); train the "
                                "base model first")
    return file


def _file_sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def latent_kinds(model) -> tuple:
    """The latent kinds a (base) model offers: its class's ``latent_kinds`` tuple, else its single
    ``latent_kind``, else ``()``."""
    kinds = getattr(type(model), "latent_kinds", None)
    if kinds:
        return tuple(kinds)
    kind = getattr(type(model), "latent_kind", None)
    return (kind,) if kind else ()


def check_base_kind(model_name: str, base_kinds, base) -> None:
    """ValueError unless one of ``base``'s latent kinds (:func:`latent_kinds`) is in ``base_kinds``."""
    kinds = latent_kinds(base)
    if not set(kinds) & set(base_kinds):
        what = f"{getattr(base, 'model_name', type(base).__name__)!r}"
        has = (f"latents of kind {' or '.join(map(repr, kinds))}" if kinds
               else "no latents a second stage can use")
        raise ValueError(f"{model_name} trains on a base run whose model gives {' or '.join(map(repr, base_kinds))} "
                         f"latents; a {what} model has {has}")


def load_base_run(path, model_name: str, base_kinds, device="cpu", log=print):
    """(base model, identity) of the finished run at ``path``, for the second stage
    ``model_name``: the model in eval mode with its EMA weights (when the run kept them),
    frozen; ``identity`` is what config.json records (see :func:`base_identity`). A missing run,
    an unfinished one (no checkpoint) or one whose model gives another kind of latents is a clear
    error naming it.
    """
    from ..train import load_run_model

    file = _checkpoint_file(path)
    base, state = load_run_model(file, device=device)
    try:
        check_base_kind(model_name, base_kinds, base)
    except ValueError as exc:
        raise ValueError(f"--base-run {path}: {exc}") from None
    if not (file.parent / "metrics.json").exists():
        # a run stopped part way is usable (its checkpoint is complete), but say so
        log(f"note: --base-run {path} has not finished its training (no metrics.json); using its "
              f"checkpoint at step {state['step']}")
    base.requires_grad_(False).eval()
    return base, base_identity(file, state)


def base_identity(file: Path, state: dict) -> dict:
    """What traces a second stage to its base: the run folder, the checkpoint's SHA-256 (of the
    file's bytes, as ``sha256sum`` prints it), and the base's model, step, configs and data,
    enough to rebuild its architecture (:func:`build_base`)."""
    return {"run": str(file.parent), "checkpoint_sha256": _file_sha256(file),
            "model_name": state["model_name"], "step": int(state["step"]),
            "model_config": state["model_config"], "data": state["data"],
            "data_root": state["train_config"].get("data_root", ""), "ema": bool(state.get("ema"))}


def note_base_changes(identity: dict, log=print) -> None:
    """On resuming a second stage: say so when the base run's checkpoint is no longer the one it
    started from (the run keeps the base weights saved in its own checkpoint)."""
    file = Path(identity["run"]) / "last.safetensors"
    if file.exists() and _file_sha256(file) != identity["checkpoint_sha256"]:
        log(f"note: the base run {identity['run']} has changed since this run started (its checkpoint's "
            "SHA-256 differs); this run keeps the base weights it started with")


def build_base(identity: dict, source: str = "checkpoint"):
    """A freshly initialised base model of the architecture ``identity`` records (its weights
    come from the second stage's checkpoint); frozen and in eval mode."""
    from .. import configs, io, models
    from .base import DataInfo

    try:
        spec = models.get(identity["model_name"])
        mcfg = configs.from_mapping(spec.config_cls, identity["model_config"], source=source)
        d = identity["data"]
        info = DataInfo(shape=tuple(d["shape"]), num_levels=d["num_levels"], name=d["name"],
                        num_classes=d.get("num_classes", 0))
    except (KeyError, TypeError, configs.ConfigError) as exc:
        raise io.CheckpointError(f"{source}: its base-run record cannot rebuild the base model ({exc})") \
            from None
    return spec.cls(mcfg, info).requires_grad_(False).eval()


def encode_dataset(base, dataset, batch_size: int = 256, encode=None):
    """``dataset`` with the base's latents appended: an ArrayDataset whose examples are the
    original example (images[, labels]) followed by one int64 code grid per level, encoded once
    under no_grad on the base's device and kept in host memory. ``encode(images) -> tuple`` of
    tensors replaces ``base.encode`` (e.g. a base's continuous latents, one float array).

    >>> import gmcore as gm
    >>> from gmcore.data import ArrayDataset
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.latent.vqvae import VQVAE
    >>> _ = gm.manual_seed(0)
    >>> cfg = VQVAE.Config(codes=8, code_dim=4, hidden=8, res_hidden=4, res_blocks=1, downsample=1)
    >>> base = VQVAE(cfg, DataInfo((1, 8, 8), 17, "digits")).eval()
    >>> ds = encode_dataset(base, ArrayDataset(gm.rand(5, 1, 8, 8).numpy(), gm.arange(5).numpy()))
    >>> [a.shape for a in ds.get_batch([0, 1])]
    [(2, 1, 8, 8), (2,), (2, 4, 4)]
    """
    import numpy as np

    from ..autograd import no_grad
    from ..data import ArrayDataset, DataLoader

    if not isinstance(dataset, ArrayDataset):
        raise TypeError(f"encode_dataset needs an array dataset (gmcore.data.ArrayDataset), got "
                        f"{type(dataset).__name__}")
    dev = next(base.parameters()).device
    levels = None
    was_training = base.training
    base.eval()
    if encode is None:
        def encode(x):
            return tuple(c.long() for c in base.encode(x))
    with no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, device=dev):
            codes = encode(batch[0])
            if levels is None:
                levels = [[] for _ in codes]
            for store, c in zip(levels, codes):
                store.append(c.cpu().numpy())
    base.train(was_training)
    codes = [np.concatenate(c) for c in levels]
    arrays, transforms = tuple(dataset.arrays), tuple(dataset.transforms)
    out = ArrayDataset(*arrays, *codes, transforms=transforms + (None,) * len(codes),
                       name=getattr(dataset, "name", "encoded"))
    for attr in ("num_levels", "num_classes", "classes"):
        if hasattr(dataset, attr):
            setattr(out, attr, getattr(dataset, attr))
    return out
