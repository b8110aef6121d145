"""The interface every trainable generative model follows (what ``gmcore train`` relies on).

A model is a :class:`gmcore.nn.Module` with a ``Config`` dataclass (its fields become CLI flags)
built as ``Model(config, data)``, where ``data`` is a :class:`DataInfo` (shape of one example,
number of discrete levels per value, data range). It defines:

* ``loss(batch) -> (loss, logs)``: the training objective (a scalar Tensor) and a dict of
  floats to log (e.g. ``{"kl": ..., "recon": ...}``).
* ``nll(batch, generator) -> Tensor (B,)``: the negative log-likelihood of the *discrete* data
  in nats per example, or an upper bound of it; ``nll_kind`` says which ("exact", "IWAE bound
  (k=...)", or "reconstruction" for models that are not density models). Continuous densities
  include the dequantization term (see :func:`gmcore.metrics.dequantization_nats`).
* ``sample(n, generator) -> Tensor (n, *shape)`` with values in the data range.
* optional class attributes ``train_defaults`` and ``config_defaults``: TrainConfig fields
  (``{"steps": 300, ...}``) and fields of the model's ``Config`` that ``gmcore train`` uses in
  place of the dataclass defaults; a TOML file and flags still override. Either may hold
  sections for a kind of data (``"image"``, ``"points"`` for the 2-D toys, ``"text"``,
  ``"audio"``) or one data set (``"8gaussians"``), each a dict of fields that overrides the
  plain ones for that data (a data set's section wins over its kind's), so that a model can
  train longer on the toys than on images, or be deeper there, without flags::

      train_defaults = {"steps": 1000, "batch_size": 64, "points": {"steps": 4000}}
      config_defaults = {"points": {"layers": 10, "hidden": 64}}

  (:func:`gmcore.cli_train.model_defaults` resolves them; the run's ``config.json`` records the
  values used.)
* optional nested dataclass ``SampleOptions``: the sampling options ``sample`` accepts as
  keywords (temperature, DDIM steps and eta, guidance scale, class, truncation ...), each a field
  with a default and a ``help`` in its metadata. ``gmcore sample RUN --temperature 0.7`` passes
  them (``gmcore sample RUN --help`` lists them, an unknown flag is refused); the end-of-run
  samples use the defaults. Example::

      @dataclass
      class SampleOptions:
          temperature: float = field(default=1.0, metadata={"help": "scale of the base draws",
                                                             "min": 0.0})

      def sample(self, n, generator=None, temperature=1.0): ...
* optional nested dataclass ``EvalOptions``: config fields that only change how ``nll`` is
  computed (a diffusion model's bound over a subsample of its timesteps), with the same names:
  ``gmcore eval RUN --timesteps-subsample 1`` replaces the run's value for that evaluation
  (``nll`` and ``nll_kind`` read ``self.config``) and records it beside the figure.
* optional ``save_pictures(out_dir, generator, test_set=None) -> dict``: extra pictures a run
  writes at its end beside ``samples.png`` (Glow's temperature strip, VQ-VAE's reconstructions
  of ``test_set``, the run's test split), under the EMA weights, in eval mode and without
  autograd; returns what it wrote (merged into ``metrics.json``).
* optional ``test_metrics(test_set) -> dict``: figures of the model's own on the run's test
  split that are not a likelihood (CycleGAN's class agreement and cycle errors), deterministic,
  computed at the run's end under the EMA weights, in eval mode and without autograd, merged
  into ``metrics.json``, and again by ``gmcore eval RUN`` (so it reproduces them).
* optional ``save_samples(out_dir, dataset, generator) -> dict``: for data that is not an image
  (text, audio), write samples in the data's own format (``samples.txt``, ``samples.wav``) at the
  end of a run; returns what it wrote, merged into ``metrics.json``.

Several networks and optimizers (GANs): instead of ``loss``, a model may define

* ``configure_optimizers(tcfg) -> {name: optimizer}``: its optimizers by name, each over its
  own parameters (a parameter in two is an error) with its own learning rate, betas and
  algorithm (TTUR: the critic's lr four times the generator's). The run's schedule (warm-up,
  then constant or cosine) multiplies each one's lr; the checkpoint holds every optimizer and
  scheduler under its name; the log rows carry ``lr_<name>``. Without it, the loop makes one
  Adam (AdamW with ``--weight-decay``) named ``"main"`` over the trainable parameters.
* ``training_step(batch, step) -> dict`` of floats to log (e.g. ``d_loss``, ``g_loss``):
  one step of the loop, made of any number of ``step.update(name, loss)`` calls (zero that
  optimizer's gradients, backpropagate, clip with ``--grad-clip``, step; returns the loss as a
  float) and ``step.next_batch()`` draws (several critic updates per generator update, each on
  a fresh batch); see :class:`gmcore.training_step.TrainingStep`. Interrupted before its first
  update, a step is rewound; after it, nothing is saved (the networks are half-updated).
  ``--resume`` stays exact: the loader, the RNG and every optimizer are in the checkpoint.
* ``ema_module() -> Module``: what ``--ema`` averages (a GAN's generator; default the model).
* ``nll_kind = "none"`` for a model without a likelihood: evaluation reports no bits/dim and
  its ``nll`` is never called (a 2-D density map is skipped when ``nll`` raises
  NotImplementedError, the base class's default).

Two stages (a model trained on the latents of a finished run; :mod:`gmcore.models.stages`):

* a *base model* declares ``latent_kind`` (e.g. ``"vq-codes"``) and the methods that kind
  promises (``encode``, ``decode``, ...; listed in :mod:`gmcore.models.stages`);
* a *second-stage model* declares ``base_kinds`` (the kinds it trains on) and a Config field
  ``base_run`` (the flag ``--base-run RUN``), and is built as ``Model(config, data, base=base)``.
  ``gmcore train`` loads the base run's model (EMA weights when kept), frozen, and records its
  path and checkpoint SHA-256 in ``config.json``; the base's weights are saved inside the second
  stage's checkpoint, so sampling, evaluation and ``--resume`` never read the base run again.
  ``self.base`` stays in eval mode whatever ``train()`` is asked, takes no gradient and is no
  optimizer's parameter.
* optional ``prepare_data(dataset) -> dataset``: the dataset the loader and the evaluation
  iterate in place of the image split, e.g. the images with their codes appended, computed once
  (:func:`gmcore.models.stages.encode_dataset`); models that need augmentation encode on the fly
  in ``loss`` instead. Pictures and sample quality still see the image split.

Models never ask which device they run on: inputs arrive on the model's device.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..nn import Module

__all__ = ["GenerativeModel", "DataInfo"]


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data.

    ``shape``: one example, e.g. (1, 8, 8). ``num_levels``: discrete values per dimension
    (17 for digits, 256 for 8-bit images, 2 when binarized, the vocabulary size for text, the
    quantization channels for mu-law audio); image values arrive scaled to ``[0, 1]`` as
    ``level / (num_levels - 1)``, text and audio as int64 ids. ``num_classes``: label classes
    (0 when the data set has no labels), for class-conditional models.
    """

    shape: tuple
    num_levels: int
    name: str = ""
    num_classes: int = 0

    @property
    def dims(self) -> int:
        n = 1
        for s in self.shape:
            n *= int(s)
        return n


class GenerativeModel(Module):
    """Base class of the zoo's models (see the module docstring for the contract)."""

    nll_kind = "exact"
    model_name = "?"
    latent_kind = None   # what a base model's latents are ("vq-codes"); None: not a base model
    base_kinds = ()      # a second stage: the latent kinds it trains on

    def __init__(self, config, data: DataInfo, base=None):
        super().__init__()
        self.config = config
        self.data = data
        if self.base_kinds:
            from .stages import check_base_kind

            if base is None:
                raise ValueError(f"{self.model_name} is a second stage: it trains on the latents of a "
                                 "finished run; name one with --base-run RUN (e.g. runs/vqvae)")
            check_base_kind(self.model_name, self.base_kinds, base)
            self.base = base.requires_grad_(False).eval()
        elif base is not None:
            raise ValueError(f"{self.model_name} takes no base model (it is not a second stage)")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.base_kinds:   # the base is frozen: its quantizers, norms and dropout stay in eval
            self.base.eval()
        return self

    def loss(self, batch):
        raise NotImplementedError

    def nll(self, batch, generator=None):
        raise NotImplementedError

    def sample(self, n, generator=None):
        raise NotImplementedError
