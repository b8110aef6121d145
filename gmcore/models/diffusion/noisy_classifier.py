"""noisy-classifier: a time-conditioned classifier p(y | x_t, t) for classifier guidance
(Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", sec. 4).

A second stage (``gmcore train noisy-classifier --base-run RUN``, RUN a finished ``ddpm`` run, or
any model of latent kind ``"diffusion"``): it trains a classifier on noisy examples
``x_t = q_sample(x0, t)`` with ``t`` uniform over the base's T steps, ``x0`` the base's diffused
form of the image (``base.to_diffusion``: 2 * image - 1 for ``ddpm``), by the cross-entropy of the
image's label. Training needs only the base's schedule; the base's weights are kept inside this
run's checkpoint anyway (every second stage does so), which lets :meth:`NoisyClassifier.sample`
draw guided samples from the base.

Guidance (Dhariwal & Nichol, Algorithms 1 and 2): ``gmcore sample DDPM_RUN --classifier RUN
--label 3 --guidance s`` shifts every reverse step by ``s * grad_x log p_phi(y | x_t, t)``
(:meth:`NoisyClassifier.cond_fn`; the samplers of :mod:`.samplers` apply it to the mean for
ancestral DDPM and to eps for DDIM and PNDM). The classifier run must share the ddpm run's
schedule (T and betas): :func:`classifier_guidance` checks it.

The network (:class:`EncoderUNet`) is the encoder half of the diffusion U-Net, as in the paper:
the sinusoidal time embedding, the down path of residual blocks (GroupNorm, SiLU, the embedding
added per channel) with self-attention at the chosen resolutions, the middle block, then
GroupNorm, SiLU, a global average pool and a linear layer to the class logits.

The run's figures (``metrics.json``): the test accuracy at t = 0, T/4, T/2 and 3T/4
(``test_accuracy_t<t>``: it falls as the noise grows), and, from its end-of-run samples (guided
by itself at its default scale, the labels 0, 1, 2, ... in turn), the digits classifier's
``label_accuracy`` beside the digits-FID. There is no likelihood (``nll_kind`` "none").

Differences from the paper: average pooling instead of attention pooling, a small network for
8x8 digits trained for minutes on a CPU, no data augmentation, and the scale ``s`` multiplies the
gradient of log p itself (the paper's classifier scale), with no extra temperature.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import autograd
from ... import creation as gc
from ...configs import int_list
from ... import nn
from ...nn import functional as F
from ...random import Generator
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel
from ..registry import register
from .unet import Downsample, ResBlock, _groups, _run, timestep_embedding

__all__ = ["NoisyClassifier", "NoisyClassifierConfig", "NoisyClassifierSampleOptions", "EncoderUNet",
           "classifier_guidance", "same_schedule"]




class EncoderUNet(nn.Module):
    """The down half of :class:`~.unet.UNet` and its middle block, pooled to class logits:
    ``forward(x, t) -> (B, num_classes)``.

    >>> import gmcore as gm
    >>> net = EncoderUNet(1, 10, channels=8, num_heads=2)
    >>> net(gm.randn(3, 1, 8, 8), gm.tensor([0, 10, 999])).shape
    gmcore.Size([3, 10])
    """

    def __init__(self, in_channels, num_classes, channels=32, channel_mult=(1, 2), num_res_blocks=2,
                 attention_resolutions=(4,), dropout=0.0, num_heads=4, groups=32, image_size=8):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"EncoderUNet: num_classes must be >= 2, got {num_classes}")
        levels = len(channel_mult)
        if not levels or image_size % 2 ** (levels - 1):
            raise ValueError(f"EncoderUNet: image_size {image_size} is not divisible by 2^(levels - 1) "
                             f"({levels} levels)")
        maps = [image_size >> i for i in range(levels)]
        for r in attention_resolutions:
            if r not in maps:
                raise ValueError(f"EncoderUNet: attention resolution {r} is none of the feature-map sizes "
                                 f"{maps} of a {image_size}x{image_size} input")
        self.channels = channels
        emb_dim = 4 * channels
        self.time_embed = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def attn(c):
            return nn.SelfAttention2d(c, num_heads=num_heads, num_groups=_groups(c, groups))

        ch = channels
        self.input_conv = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.down = nn.ModuleList()
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                step = [ResBlock(ch, mult * channels, emb_dim, dropout, groups)]
                ch = mult * channels
                if maps[level] in attention_resolutions:
                    step.append(attn(ch))
                self.down.append(nn.ModuleList(step))
            if level != levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
        self.middle = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, groups), attn(ch),
                                     ResBlock(ch, ch, emb_dim, dropout, groups)])
        self.out_norm = nn.GroupNorm(_groups(ch, groups), ch)
        self.head = nn.Linear(ch, num_classes)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if not t.is_floating_point():
            t = t.to(x.dtype)
        emb = F.silu(self.time_embed(timestep_embedding(t, self.channels)))
        h = self.input_conv(x)
        for step in self.down:
            h = _run(step, h, emb)
        h = _run(self.middle, h, emb)
        h = F.silu(self.out_norm(h)).mean((2, 3))
        return self.head(h)


@dataclass
class NoisyClassifierConfig:
    base_run: str = field(default="", metadata={
        "help": "the finished ddpm run whose schedule the classifier trains on (required)"})
    channels: int = field(default=32, metadata={"help": "encoder base width", "min": 1})
    channel_mult: str = field(default="1,2", metadata={
        "help": "encoder width multipliers, one level each (comma-separated)"})
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per level", "min": 1})
    attention_resolutions: str = field(default="4", metadata={
        "help": "feature-map sizes with self-attention (comma-separated; empty: the middle only)"})
    num_heads: int = field(default=4, metadata={"help": "attention heads", "min": 1})
    dropout: float = field(default=0.1, metadata={"help": "dropout in the residual blocks", "min": 0.0})


@dataclass
class NoisyClassifierSampleOptions:
    guidance: float = field(default=3.0, metadata={
        "help": "classifier scale s: each reverse step follows s * grad log p(y | x_t, t)", "min": 0.0})
    label: int = field(default=-1, metadata={"help": "draw this class only (-1: the classes in turn)",
                                             "min": -1})
    sampler: str = field(default="ddim", metadata={"help": "the base's sampler",
                                                   "choices": ["ddpm", "ddim", "pndm"]})
    steps: int = field(default=50, metadata={"help": "denoising steps (0: all T)", "min": 0})


@register("noisy-classifier", family="diffusion", dataset="digits",
          description="time-conditioned classifier p(y | x_t, t) on a ddpm run's schedule (--base-run), "
                      "for classifier guidance (gmcore sample DDPM_RUN --classifier RUN)")
class NoisyClassifier(GenerativeModel):
    """See the module docstring.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
    >>> info = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
    >>> base = DDPM(DDPMConfig(channels=8, timesteps=20, attention_resolutions="", num_heads=1), info)
    >>> clf = NoisyClassifier(NoisyClassifierConfig(channels=8, num_heads=2), info, base=base).eval()
    >>> clf.logits(gm.randn(2, 1, 8, 8), gm.tensor([0, 19])).shape
    gmcore.Size([2, 10])
    >>> clf.cond_fn(gm.tensor([3, 7]))(gm.randn(2, 1, 8, 8), gm.tensor([5, 5])).shape
    gmcore.Size([2, 1, 8, 8])
    """

    Config = NoisyClassifierConfig
    SampleOptions = NoisyClassifierSampleOptions
    base_kinds = ("diffusion",)
    nll_kind = "none"
    # eval_every 0: an evaluation of a model without a likelihood draws guided samples. On a
    # 800-step ddpm base (32 channels): test accuracy 0.99 / 0.76 / 0.28 / 0.09 at t = 0, T/4,
    # T/2, 3T/4 after 1500 steps (about 3.5 CPU minutes), still rising slowly
    train_defaults = {"steps": 1500, "batch_size": 128, "lr": 1e-3, "warmup": 100, "lr_schedule": "cosine",
                      "eval_every": 0, "weight_decay": 0.05}
    ACCURACY_FRACTIONS = (0.0, 0.25, 0.5, 0.75)   # of T: where metrics.json reports the test accuracy
    GUIDANCE_SCALES = (0.0, 1.0, 3.0, 10.0)       # the rows of guidance.png

    def __init__(self, config: NoisyClassifierConfig, data: DataInfo, base=None):
        super().__init__(config, data, base=base)
        c = config
        if int(data.num_classes) < 2:
            raise ValueError(f"noisy-classifier needs a data set with class labels; "
                             f"{data.name or 'this one'} has none")
        self.num_classes = int(data.num_classes)
        if "classifier" not in inspect.signature(self.base.sample).parameters:
            # (bit-diffusion: its self-conditioned sampler takes no guidance hook)
            raise ValueError(f"noisy-classifier: a {self.base.model_name} base cannot be sampled with "
                             "classifier guidance (its sample takes no classifier)")
        C, H, W = (int(v) for v in self.base.diffusion_shape)
        if H != W:
            raise ValueError(f"noisy-classifier: square inputs only, got {H}x{W}")
        if not 0.0 <= c.dropout < 1.0:
            raise ValueError(f"noisy-classifier: --dropout must be in [0, 1), got {c.dropout}")
        self.net = EncoderUNet(C, self.num_classes, channels=c.channels,
                               channel_mult=int_list(c.channel_mult, "channel-mult", self.model_name),
                               num_res_blocks=c.num_res_blocks,
                               attention_resolutions=int_list(c.attention_resolutions, "attention-resolutions", self.model_name),
                               dropout=c.dropout, num_heads=c.num_heads, image_size=H)

    # ---- the classifier -----------------------------------------------------------------------
    @property
    def schedule(self):
        """The noise schedule the classifier was trained on (its base's)."""
        return self.base.diffusion.schedule

    @property
    def num_timesteps(self) -> int:
        return int(self.schedule.num_timesteps)

    @property
    def class_conditional(self) -> bool:
        """Samples are guided towards the labels 0, 1, 2, ... in turn (the run reports how often
        the digits classifier reads them as their label)."""
        return True

    def logits(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Class logits (B, K) of diffused examples ``x_t`` at timesteps ``t`` (B,) of the base's
        schedule."""
        return self.net(x_t, t)

    def cond_fn(self, labels: Tensor):
        """The samplers' guidance hook for ``labels`` (B,): ``cond_fn(x_t, t) = grad_x log
        p(labels | x_t, t)`` (B, C, H, W), by autograd through the classifier, with grad mode on
        even inside a sampler's no_grad."""
        labels = labels.long()

        def cond_fn(x, t):
            with autograd.enable_grad():
                x = x.detach().requires_grad_()
                logp = self.logits(x, t).log_softmax(1)
                chosen = logp.gather(1, labels.reshape(-1, 1).to(x.device)).sum()
                return autograd.grad(chosen, x)[0].detach()
        return cond_fn

    def _noisy(self, x: Tensor, t: Tensor, generator=None) -> Tensor:
        x0 = self.base.to_diffusion(x)
        noise = gc.randn(*x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        return self.base.diffusion.q_sample(x0, t, noise)

    def _labels(self, batch) -> Tensor:
        if len(batch) < 2:
            raise ValueError("noisy-classifier: batches must be (images, labels)")
        return batch[1].long()

    # ---- the training-loop contract -------------------------------------------------------------
    def loss(self, batch):
        x, y = batch[0], self._labels(batch)
        t = gc.randint(0, self.num_timesteps, (x.shape[0],), device=x.device)
        logits = self.logits(self._noisy(x, t), t)
        loss = F.cross_entropy(logits, y)
        acc = float((logits.argmax(1) == y).float().mean().item())
        return loss, {"accuracy": acc}

    def accuracy(self, dataset, t: int, seed: int = 0, batch_size: int = 256) -> float:
        """Accuracy on ``dataset`` (images, labels) of the examples diffused to timestep ``t``
        (one noise draw each, from ``seed``)."""
        from ...data import DataLoader

        T = self.num_timesteps
        if not 0 <= int(t) < T:
            raise ValueError(f"noisy-classifier: t must be in [0, {T}), got {t}")
        dev = next(self.net.parameters()).device
        gen = Generator(device=dev).manual_seed(seed)
        right = count = 0
        with autograd.no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, device=dev):
                y = self._labels(batch)
                tt = gc.full((y.shape[0],), int(t), dtype="int64", device=dev)
                pred = self.logits(self._noisy(batch[0], tt, gen), tt).argmax(1)
                right += int((pred == y).sum().item())
                count += int(y.shape[0])
        return right / max(count, 1)

    def sample(self, n, generator=None, guidance=3.0, label=-1, sampler="ddim", steps=50):
        """``n`` images from the base, guided by this classifier with scale ``guidance`` towards
        ``label`` (-1: the labels 0, 1, 2, ... in turn)."""
        return self.base.sample(n, generator=generator, sampler=sampler, steps=steps, guidance=guidance,
                                label=label, classifier=self)

    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """The test accuracy at t = 0, T/4, T/2 and 3T/4 (``test_accuracy_t<t>``), and
        ``guidance.png``: one row per classifier scale in GUIDANCE_SCALES, the classes along the
        row, every row from the same noise."""
        res = {}
        if test_set is not None:
            for f in self.ACCURACY_FRACTIONS:
                t = int(round(f * self.num_timesteps))
                res[f"test_accuracy_t{t}"] = self.accuracy(test_set, t)
        if len(self.data.shape) == 3:
            from ...functional import cat
            from ...plots import save_image_grid

            state = generator.get_state() if generator is not None else None
            rows = []
            for s in self.GUIDANCE_SCALES:
                if state is not None:
                    generator.set_state(state)
                rows.append(self.sample(self.num_classes, generator=generator, guidance=s))
            save_image_grid(cat(rows, 0), Path(out_dir) / "guidance.png", nrow=self.num_classes)
            res.update(guidance_png="guidance.png", guidance_scales=list(self.GUIDANCE_SCALES))
        return res


def same_schedule(a, b) -> bool:
    """Whether two noise schedules are the same process: the same T and betas (to float64
    round-off)."""
    return a.num_timesteps == b.num_timesteps and np.allclose(a.betas, b.betas, rtol=1e-12, atol=0.0)


def load_classifier(path, device="cpu") -> NoisyClassifier:
    """The noisy-classifier of the run folder (or checkpoint) ``path``, in eval mode."""
    from ...train import load_run_model

    p = Path(path)
    stem = p / "last" if p.is_dir() else (p.with_suffix("") if p.suffix in (".json", ".safetensors") else p)
    if not p.exists() and not stem.with_name(stem.name + ".safetensors").exists():
        raise FileNotFoundError(f"--classifier {path}: no such run folder")
    if not stem.with_name(stem.name + ".safetensors").exists():
        raise FileNotFoundError(f"--classifier {path}: no noisy-classifier run there (no "
                                f"{stem.name}.safetensors); train one with gmcore train noisy-classifier "
                                "--base-run DDPM_RUN")
    model, state = load_run_model(stem, device=device)
    if not isinstance(model, NoisyClassifier):
        raise ValueError(f"--classifier {path} is a {state['model_name']} run, not a noisy-classifier run")
    return model


def classifier_guidance(model, classifier, n: int, label: int, scale: float, edit: bool = False):
    """(labels (n,), cond_fn or None) that guide the diffusion model ``model`` (a ``ddpm``) towards
    ``label`` (-1: the classes in turn; an edit needs one) with the noisy classifier
    ``classifier`` (a run folder, or the model). The classifier must have been trained on the
    model's schedule and diffused shape: a ValueError says what differs.

    ``scale`` is not applied here (it is the samplers' ``guidance_scale``); with ``scale`` 0
    cond_fn is None (unguided sampling, the labels kept for scoring).
    """
    dev = next(model.parameters()).device
    clf = load_classifier(classifier, device=dev) if isinstance(classifier, (str, Path)) else classifier
    if not isinstance(clf, NoisyClassifier):
        raise TypeError(f"classifier must be a noisy-classifier run folder or model, got {type(clf).__name__}")
    mine, theirs = model.diffusion.schedule, clf.schedule
    if not same_schedule(mine, theirs):
        raise ValueError(
            f"--classifier: the classifier was trained on another noise schedule ({theirs.name}, "
            f"T = {theirs.num_timesteps}) than this {model.model_name} run's ({mine.name}, T = "
            f"{mine.num_timesteps}); train one on this run: gmcore train noisy-classifier --base-run RUN")
    if tuple(clf.base.diffusion_shape) != tuple(model.diffusion_shape):
        raise ValueError(f"--classifier: the classifier sees examples of shape {tuple(clf.base.diffusion_shape)}, "
                         f"this run diffuses {tuple(model.diffusion_shape)}")
    K = clf.num_classes
    if label >= K:
        raise ValueError(f"--label must be in [0, {K - 1}] (the classifier's classes), got {label}")
    if label < 0 and edit:
        raise ValueError("--classifier guides towards a class: give --label")
    labels = gc.full((n,), int(label), dtype="int64", device=dev) if label >= 0 \
        else gc.arange(n, device=dev) % K
    # scale 0: the unguided process (the labels still name what each sample was drawn for)
    return labels, (clf.cond_fn(labels) if scale else None)
