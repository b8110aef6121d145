"""glide-core: text-conditional diffusion with classifier-free guidance, the core of GLIDE
(Nichol et al. 2021, "GLIDE: Towards Photorealistic Image Generation and Editing with
Text-Guided Diffusion Models").

Captions are made from the digit labels (:mod:`gmcore.data.captions`: "a handwritten seven",
"the digit 7", "7", ...; a fixed set of training templates, and held-out templates used only
for the test figure), tokenized by a small word-level vocabulary (an unknown word is an error
that names it). As GLIDE:

* a small transformer text encoder (:class:`TextEncoder`: token and position embeddings,
  pre-norm :class:`gmcore.nn.TransformerEncoder` layers, a final LayerNorm), trained jointly
  with the U-Net from scratch;
* its final token embeddings enter every attention layer of the U-Net as extra keys and values,
  concatenated to the image positions' (:class:`.unet.ContextAttention2d`; padding masked);
* its pooled output (the last token, the caption's ``<eot>``: captions are left-padded) is
  projected and added to the time embedding;
* caption dropout (``--label-dropout``, 0.2): the empty caption is the null condition, so one
  network is both conditional and unconditional, and sampling mixes them by classifier-free
  guidance with ddpm's convention, ``eps = (1 + w) eps(x, caption) - w eps(x, "")``
  (``--guidance w``; w = 0 the conditional model; GLIDE's scale s is w + 1).

Everything else is ddpm's (:class:`.ddpm.DDPM`, subclassed): the process, L_simple, EMA, the
samplers and their options. ``gmcore sample RUN --prompt "a handwritten seven" --guidance 3 --n 200
--out samples.npy``; without ``--prompt`` (or ``--label K``) the captions cycle over the digits
0, 1, ..., 9 with the training templates in turn.

The figure: the variational bound of ddpm, on -log p(x | caption) with each test image's
caption from the training templates in turn (a caption, not the label, is what the model is
conditioned on), its KL sum estimated from one timestep in each block of
``--timesteps-subsample`` 10 by default (unbiased; ``gmcore eval RUN --timesteps-subsample 1``
for all T terms); digits-FID of the end-of-run samples; and the issue's test, in metrics.json:
``held_out_accuracy_by_guidance``, the fraction of 200 samples for held-out caption templates
(digits in turn) that the digits classifier of :mod:`gmcore.feature_metrics` reads as the
digit the caption names, at w = 0, 1 and 3. ``prompts.png``: one row per prompt (a held-out
caption of each digit), samples along the row, at w = 3.

Differences from GLIDE: 8x8 digits and ten classes' worth of captions, not 64x64 photos and
their alt-texts; a word-level vocabulary of 30 words, not BPE; a 2-layer, 64-wide text encoder
and a 32-channel U-Net, trained for minutes on a CPU; no upsampler, no CLIP guidance, no
inpainting model.

>>> import gmcore as gm
>>> from gmcore.models.base import DataInfo
>>> m = GlideCore(GlideCoreConfig(channels=8, timesteps=20, text_width=16, num_heads=2),
...               DataInfo((1, 8, 8), 17, "digits", num_classes=10)).eval()
>>> m.sample(2, prompt="a handwritten seven", guidance=3.0, steps=4).shape
gmcore.Size([2, 1, 8, 8])
>>> m.sample(1, prompt="a handwritten eleven")
Traceback (most recent call last):
...
ValueError: unknown word 'eleven' in the caption 'a handwritten eleven' (the vocabulary: ...)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import creation as gc
from ...configs import int_list
from ... import functional as gf
from ... import nn
from ...data import captions as cap
from ...tensor import Tensor
from ..base import DataInfo
from ..registry import register
from . import samplers
from .ddpm import DDPM, DDPMConfig, DDPMSampleOptions
from .unet import UNet

__all__ = ["GlideCore", "GlideCoreConfig", "GlideCoreSampleOptions", "TextEncoder"]


def _field(cls, name, default=dataclasses.MISSING, help=None):
    """Field ``name`` of dataclass ``cls`` again, with a new default and/or help."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    meta = dict(f.metadata)
    if help is not None:
        meta["help"] = help
    return field(default=f.default if default is dataclasses.MISSING else default, metadata=meta)


class TextEncoder(nn.Module):
    """Token ids (B, L) -> (the token embeddings (B, L, width), the padding mask (B, L), True at
    ``<pad>``): token plus learned position embeddings, ``layers`` pre-norm transformer encoder
    layers (padding masked out of the keys), a final LayerNorm.

    >>> import gmcore as gm
    >>> enc = TextEncoder(vocab_size=32, context=9, width=16, layers=1, heads=2)
    >>> xf, pad = enc(gm.tensor(cap.encode(["the digit 7"])))
    >>> xf.shape, pad.tolist()
    (gmcore.Size([1, 9, 16]), [[True, True, True, True, True, False, False, False, False]])
    """

    def __init__(self, vocab_size: int, context: int, width: int = 64, layers: int = 2, heads: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"glide-core: --text-width {width} must be divisible by --text-heads {heads}")
        self.context = int(context)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(self.context, width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers)
        self.final_norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor):
        if tokens.ndim != 2 or tokens.shape[1] != self.context:
            raise ValueError(f"TextEncoder: tokens must be (B, {self.context}), got {tuple(tokens.shape)}")
        pad = tokens == cap.PAD
        positions = gc.arange(self.context, device=tokens.device).reshape(1, -1)
        h = self.token_embedding(tokens) + self.position_embedding(positions)
        h = self.transformer(h, src_key_padding_mask=pad)
        return self.final_norm(h), pad


@dataclass
class GlideCoreConfig(DDPMConfig):
    class_cond: bool = _field(DDPMConfig, "class_cond", help=(
        "not for glide-core (ddpm's label conditioning): it conditions on captions made from the labels"))
    label_dropout: float = _field(DDPMConfig, "label_dropout", 0.2, help=(
        "caption dropout: probability of training on the empty caption (the null condition of "
        "classifier-free guidance)"))
    timesteps_subsample: int = _field(DDPMConfig, "timesteps_subsample", 10)
    text_width: int = field(default=64, metadata={"help": "text encoder width", "min": 1})
    text_layers: int = field(default=2, metadata={"help": "text encoder transformer layers", "min": 1})
    text_heads: int = field(default=4, metadata={"help": "text encoder attention heads", "min": 1})


@dataclass
class GlideCoreSampleOptions:
    sampler: str = _field(DDPMSampleOptions, "sampler")
    steps: int = _field(DDPMSampleOptions, "steps")
    eta: float = _field(DDPMSampleOptions, "eta")
    spacing: str = _field(DDPMSampleOptions, "spacing")
    guidance: float = _field(DDPMSampleOptions, "guidance", help=(
        "classifier-free guidance weight w: (1+w) eps(x, caption) - w eps(x, empty caption); "
        "0: the conditional model"))
    prompt: str = field(default="", metadata={
        "help": "the caption to draw, e.g. 'a handwritten seven' (empty: captions cycling over the "
                "digits, the training templates in turn)"})
    label: int = _field(DDPMSampleOptions, "label", help=(
        "without --prompt: captions of this digit only, the training templates in turn (-1: the "
        "digits in turn)"))


@register("glide-core", family="diffusion", dataset="digits",
          description="GLIDE's core: captions from labels, a transformer text encoder into the U-Net's "
                      "attention and time embedding, caption dropout, classifier-free guidance")
class GlideCore(DDPM):
    """See the module docstring."""

    Config = GlideCoreConfig
    SampleOptions = GlideCoreSampleOptions
    latent_kind = None          # not a base for noisy-classifier (its labels are captions here)
    supports_levels = False     # its caption-conditioned denoiser reads the net's output as is
    train_defaults = {"lr": 1e-3, "warmup": 100, "lr_schedule": "cosine", "batch_size": 64,
                      "steps": 1000, "eval_every": 0, "ema": 0.999}
    config_defaults = {}        # images only: none of ddpm's points-mode sizes
    GUIDANCE_SCALES = (0.0, 1.0, 3.0)
    HELD_OUT_SAMPLES = 180      # 3 per (digit, held-out template) pair
    PROMPT_ROW = 10             # samples per prompt in prompts.png

    def __init__(self, config: GlideCoreConfig, data: DataInfo, base=None):
        if config.class_cond:
            raise ValueError("glide-core conditions on captions made from the labels, not on the labels: "
                             "drop --class-cond")
        if data.num_classes != 10 or data.name not in ("digits", "mnist"):
            raise ValueError(f"glide-core makes its captions from digit labels 0-9 (digits, mnist); "
                             f"{data.name or 'this data set'} has {data.num_classes} classes")
        super().__init__(config, data, base=base)   # builds the caption-reading U-Net (build_net)
        self.text = TextEncoder(len(cap.VOCAB), cap.CONTEXT, config.text_width, config.text_layers,
                                config.text_heads)
        self.num_classes = 10      # the digits the captions name: samples cycle through them

    def build_net(self):
        c = self.config
        C, H, W = self.diffusion_shape
        return UNet(C, C * (2 if c.learn_sigma else 1), channels=c.channels,
                    channel_mult=int_list(c.channel_mult, "channel-mult", self.model_name), num_res_blocks=c.num_res_blocks,
                    attention_resolutions=int_list(c.attention_resolutions, "attention-resolutions", self.model_name),
                    dropout=c.dropout, num_heads=c.num_heads, image_size=H,
                    scale_shift_norm=c.scale_shift_norm, context_dim=c.text_width)

    # ---- captions -> tokens ---------------------------------------------------------------------
    @property
    def _device(self):
        return next(self.parameters()).device

    def tokens(self, captions) -> Tensor:
        """int64 (len(captions), CONTEXT) on the model's device (unknown words: a ValueError)."""
        return gc.tensor(cap.encode(list(captions)), device=self._device)

    def digit_tokens(self, labels, template_ids, templates=cap.TRAIN_TEMPLATES) -> Tensor:
        """Tokens of digit ``labels[i]``'s caption by template ``template_ids[i]`` (mod the count)."""
        return self.tokens(cap.digit_captions(labels, template_ids, templates))

    def _labels_of(self, batch) -> np.ndarray:
        if len(batch) < 2:
            raise ValueError("glide-core: batches must be (images, labels): the captions are made from "
                             "the labels")
        return batch[1].long().cpu().numpy()

    def _batch_labels(self, batch):
        """The condition of a test batch (the bound's): example i's caption by training template
        i mod 8."""
        labels = self._labels_of(batch)
        return self.digit_tokens(labels, np.arange(len(labels)))

    def _training_condition(self, batch):
        """A random training template per example; with probability ``label_dropout`` the empty
        caption instead (both drawn from the global generator, so resume is exact)."""
        labels = self._labels_of(batch)
        B = len(labels)
        ids = gc.randint(0, len(cap.TRAIN_TEMPLATES), (B,)).numpy()
        texts = cap.digit_captions(labels, ids)
        if self.config.label_dropout:
            drop = (gc.rand(B) < self.config.label_dropout).numpy()
            texts = ["" if d else s for s, d in zip(texts, drop)]
        return self.tokens(texts)

    def _sample_labels(self, n: int, label: int, guidance: float, edit: bool = False):
        """Tokens for drawing ``n`` without a prompt: digit ``label`` (-1: the digits in turn) with
        the training templates in turn; an edit without a label: the empty caption (None)."""
        if label >= self.num_classes:
            raise ValueError(f"glide-core: --label must be in [0, 9], got {label}")
        if label < 0 and edit:
            if guidance:
                raise ValueError("glide-core edit: --guidance needs a --prompt or --label to guide towards")
            return None
        i = np.arange(n)
        labels = np.full(n, label) if label >= 0 else i % 10
        return self.digit_tokens(labels, i // 10 if label < 0 else i)

    def _condition(self, n: int, prompt: str, label: int, guidance: float, edit: bool = False):
        if prompt:
            if label >= 0:
                raise ValueError("glide-core: give --prompt or --label, not both")
            return self.tokens([prompt] * n)
        return self._sample_labels(n, label, guidance, edit=edit)

    # ---- the denoiser ---------------------------------------------------------------------------
    def denoiser(self, tokens=None, guidance: float = 0.0):
        """``model_fn(x_t, t)`` conditioned on the captions ``tokens`` (B, CONTEXT) (None: the
        empty caption), with classifier-free guidance of weight ``guidance``: the prediction
        channels become ``(1 + w) out(x, caption) - w out(x, "")``. The captions are encoded
        once, at the first call, not at every sampler step."""
        null = None

        def encode(tok, B):
            return self.text(tok if tok is not None else self.tokens([""] * B))

        if guidance:
            if tokens is None:
                raise ValueError("glide-core: classifier-free guidance needs a caption to guide towards")
            null = encode(None, tokens.shape[0])
        cache = {}
        C = self.diffusion_shape[0]

        def model_fn(x, t):
            B = x.shape[0]
            if "ctx" not in cache:
                cache["ctx"] = encode(tokens, B)
            ctx, pad = cache["ctx"]
            if not guidance:
                return self.net(x, t, context=ctx, context_mask=pad)
            out = self.net(gf.cat([x, x], 0), gf.cat([t, t], 0), context=gf.cat([ctx, null[0]], 0),
                           context_mask=gf.cat([pad, null[1]], 0))
            cond, uncond = out[:B], out[B:]
            pred = cond[:, :C] * (1.0 + guidance) - uncond[:, :C] * guidance
            return gf.cat([pred, cond[:, C:]], 1) if self.config.learn_sigma else pred
        return model_fn

    @property
    def nll_kind(self) -> str:
        k = self.config.timesteps_subsample
        kind = ("variational bound on -log p(x | caption), each test image's caption from the training "
                "templates in turn")
        if k == 1:
            return kind
        return (f"{kind}; its KL sum estimated from one timestep drawn in each block of {k} of the "
                f"{self.config.timesteps} (unbiased)")

    # ---- sampling -------------------------------------------------------------------------------
    def sample(self, n, generator=None, sampler="ddim", steps=50, eta=0.0, spacing="trailing",
               guidance=0.0, prompt="", label=-1, return_chain=False):
        """``n`` images in [0, 1] for the caption ``prompt`` (or, without one, captions of digit
        ``label`` / of the digits in turn), guided with weight ``guidance``; see
        :class:`GlideCoreSampleOptions`."""
        tokens = self._condition(n, prompt, label, guidance)
        return self.draw(self.denoiser(tokens, guidance), n, generator, sampler, steps, eta, spacing,
                         return_chain)

    def edit(self, x, strength: float, generator=None, sampler="ddim", steps=50, eta=0.0,
             spacing="trailing", guidance=0.0, prompt="", label=-1):
        """SDEdit towards a caption (``gmcore edit RUN --prompt ...``): images ``x`` in [0, 1]
        noised to ``strength * T`` and denoised conditioned on ``prompt`` (or digit ``label``'s
        captions; neither: the empty caption)."""
        if tuple(x.shape[1:]) != tuple(self.data.shape):
            raise ValueError(f"glide-core edit: images must be (B, {', '.join(map(str, self.data.shape))}), "
                             f"got {tuple(x.shape)}")
        tokens = self._condition(x.shape[0], prompt, label, guidance, edit=True)
        out = samplers.sdedit(self.diffusion, self.denoiser(tokens, guidance), self.to_diffusion(x), strength,
                              sampler=sampler, steps=self._steps(steps), eta=eta, spacing=spacing,
                              generator=generator, clip_x0=self.clip_x0)
        return self.from_diffusion(out)

    # ---- pictures and the test figure -----------------------------------------------------------
    def save_pictures(self, out_dir, generator=None, test_set=None) -> dict:
        """ddpm's pictures (chain.png; guidance.png, one row per weight of GUIDANCE_SCALES, and the
        label accuracy by guidance on training-template captions), then the issue's figure: the
        held-out templates' accuracy by guidance, and ``prompts.png``."""
        from ...plots import save_image_grid

        res = super().save_pictures(out_dir, generator=generator, test_set=test_set)
        if self.data.name == "digits":
            res.update(self.held_out_accuracy(generator))
        prompts = [cap.caption(d, cap.HELD_OUT_TEMPLATES[d % len(cap.HELD_OUT_TEMPLATES)]) for d in range(10)]
        k = self.PROMPT_ROW
        rows = self.draw(self.denoiser(self.tokens([p for p in prompts for _ in range(k)]), 3.0),
                         len(prompts) * k, generator)
        save_image_grid(rows, Path(out_dir) / "prompts.png", nrow=k)
        res.update(prompts_png="prompts.png", prompts_png_rows=prompts, prompts_png_guidance=3.0)
        return res

    def held_out_accuracy(self, generator=None) -> dict:
        """The issue's test: HELD_OUT_SAMPLES samples for held-out caption templates (sample i:
        digit i mod 10, template (i div 10) mod 6, so 60 samples cover every pair), the fraction
        the digits classifier reads as the digit its caption names, at each weight of
        GUIDANCE_SCALES; at the largest weight also by template."""
        from ...autograd import enable_grad
        from ...feature_metrics import DigitsFeatures

        with enable_grad():        # the classifier trains on first use (a cache miss)
            net = DigitsFeatures.get()
        i = np.arange(self.HELD_OUT_SAMPLES)
        labels, ids = i % 10, (i // 10) % len(cap.HELD_OUT_TEMPLATES)
        tokens = self.digit_tokens(labels, ids, cap.HELD_OUT_TEMPLATES)
        by_w, by_template = {}, {}
        for w in self.GUIDANCE_SCALES:
            x = self.draw(self.denoiser(tokens, w), len(i), generator)
            by_w[str(w)] = net.accuracy(x, labels)
        x = x.cpu().numpy()         # the last weight's samples, by template
        for j, tmpl in enumerate(cap.HELD_OUT_TEMPLATES):
            if (ids == j).any():
                by_template[tmpl] = net.accuracy(x[ids == j], labels[ids == j])
        return {"held_out_accuracy_by_guidance": by_w, "held_out_templates": list(cap.HELD_OUT_TEMPLATES),
                f"held_out_accuracy_by_template_at_guidance_{self.GUIDANCE_SCALES[-1]}": by_template}
