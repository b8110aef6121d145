"""Plumbing shared by the flow models: data in and out of the flow's space, the likelihood in the
unit users quote, and sampling.

A flow model subclasses :class:`FlowModel` and builds ``self.flow`` in ``__init__``: a
:class:`gmcore.nn.flows.FlowDensity`, or anything with ``log_prob(y) -> (B,)`` and
``sample(n, generator=, temperature=)``. ``loss``, ``nll`` and ``sample`` come from here.

Images with ``K`` levels (digits: 17), arriving in [0, 1] as ``level / (K - 1)``:

* dequantization: ``x = (level + u) / K`` with noise ``u`` in ``[0, 1)^D`` drawn from the given
  generator (the global one while training), so ``x`` has a density on ``[0, 1)^D``: uniform
  noise, or with ``--dequantization variational`` (the models whose config holds
  :class:`DequantizationConfig`) a learned ``q(u | x)``
  (:class:`gmcore.nn.flows.VariationalDequantizer`, Flow++'s), trained with the flow;
* a fixed map into the flow's space, chosen by the class attribute ``preprocess``:
  ``"affine"`` (``y = x - 0.5``, log-det 0) or ``"logit"`` (RealNVP's
  ``y = logit(a + (1 - 2a) x)`` with ``a = logit_alpha``); its log-determinant is counted;
* ``nll = -log p(x) + D log K + log q(u | level)``: the dequantization bound on the NLL of the
  *discrete* data (:func:`gmcore.metrics.dequantization_nats`; ``log q = 0`` for uniform
  noise), one noise draw per example, nats per example; ``loss`` is its mean in bits per
  dimension (``nll / (D ln 2)``). ``--dequant-samples K`` (also ``gmcore eval RUN
  --dequant-samples K``) makes the test figure the importance-weighted bound over K draws,
  ``-log mean_k exp(-nll_k)`` (Burda et al.'s estimator, as the VAEs' IWAE bound): still an upper
  bound on the discrete NLL in expectation, tighter as K grows, and with uniform noise it tends
  to ``-log P(level)`` itself. Training always uses one draw.

Continuous points (the 2-D toys, ``num_levels == 0``): the flow models the points as they are;
``nll = -log p(x)`` in nats (an exact density, no dequantization, no bits/dim) and ``loss`` is
its mean. ``--noise-std s`` (:class:`PointNoiseConfig`) is noise regularization (Rothfuss et al.
2019, "Noise Regularization for Conditional Density Estimation"): the loss sees each training
point moved by fresh Gaussian noise of std ``s`` times each feature's standard deviation over
the batch (noise on standardised data, with the batch's spread standing in for the data
set's), so the flow fits the data smoothed by a narrow Gaussian kernel instead of
collapsing onto the 1000 training points; ``nll`` (the test figure) is of the points as they
are. The smoothing costs little where the kernel is narrow beside the data's own features: on
8gaussians (features of std 1.4, modes of std 0.1) ``s = 0.03`` is a kernel of std 0.042, and
the true density smoothed by it scores 0.013 nats worse than the truth.

``sample(n, generator, temperature)`` draws base samples scaled by ``temperature``, inverts the
flow and, for images, the preprocessing; then quantizes to the ``K`` levels and returns
``level / (K - 1)`` in [0, 1]. Points come back as they are.

Class attributes a model may change: ``preprocess``, ``logit_alpha``, ``flat_input`` (True:
images reach the flow flattened to ``(B, D)``, for the flows on vectors: linear, MAF, planar).
On the 17-level digits the logit map with a small ``alpha`` helps a lot: the best Gaussian
reaches 2.26 bits/dim with ``alpha`` 0.003-0.01 (0.05: 2.45) against 2.93 on the affine data.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ... import creation as gc
from ...functional import shape as _shape
from ... import distributed, metrics
from ...autograd import no_grad
from ...nn.flows import FlowDensity, FlowSequential, VariationalDequantizer
from ...nn.sync_batchnorm import global_moments
from ...tensor import Tensor
from ..base import DataInfo, GenerativeModel

__all__ = ["FlowModel", "NumericalInverseDensity", "FlowSampleOptions", "FlowEvalOptions",
           "DequantizationConfig", "PointNoiseConfig"]

DEQUANTIZATIONS = ("uniform", "variational")


def _dequant_samples_field():
    return field(default=1, metadata={
        "help": "noise draws per test image: K > 1 gives the importance-weighted bound "
                "-log mean_k p(x + u_k) / q(u_k | x), tighter as K grows (with uniform noise it "
                "tends to the discrete NLL itself); training always uses one draw", "min": 1})


@dataclass
class PointNoiseConfig:
    """``--noise-std``, which every flow's config inherits: noise regularization of a flow
    fitted to continuous points (see the module docstring)."""

    noise_std: float = field(default=0.0, metadata={
        "help": "std of the Gaussian noise added to each training point, in units of each "
                "feature's standard deviation over the batch (noise regularization; continuous "
                "points only, 0 = off; the test NLL is of the clean points)", "min": 0.0})


@dataclass
class DequantizationConfig(PointNoiseConfig):
    """The fields an image flow's config inherits: ``--noise-std`` (for points) and the
    dequantization options (``--dequantization``, ``--dequant-hidden``,
    ``--dequant-couplings``, ``--dequant-samples``)."""

    dequantization: str = field(default="uniform", metadata={
        "help": "noise added to the discrete levels: uniform, or variational (Flow++: a learned "
                "conditional flow q(u|x), trained with the model; images only)",
        "choices": list(DEQUANTIZATIONS)})
    dequant_hidden: int = field(default=32, metadata={
        "help": "channels of the variational dequantizer's networks", "min": 1})
    dequant_couplings: int = field(default=4, metadata={
        "help": "affine couplings of the variational dequantizer", "min": 1})
    dequant_samples: int = _dequant_samples_field()


@dataclass
class FlowEvalOptions:
    """``gmcore eval RUN --dequant-samples K`` (images): the importance-weighted bound."""

    dequant_samples: int = _dequant_samples_field()


@dataclass
class FlowSampleOptions:
    temperature: float = field(default=1.0, metadata={
        "help": "scale of the base draws (1 = the model's density; lower = more typical samples)",
        "min": 0.0})


class FlowModel(GenerativeModel):
    """Base class of the flow models (see the module docstring); subclasses set ``self.flow``.

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.nn.flows import FlowDensity, StandardNormal
    >>> from gmcore.nn.flows.linear import LULinear
    >>> class Tiny(FlowModel):                     # a Gaussian on flattened images
    ...     flat_input = True
    ...     def __init__(self, config, data):
    ...         super().__init__(config, data)
    ...         self.flow = FlowDensity(StandardNormal(self.flow_shape), LULinear(data.dims))
    >>> m = Tiny(None, DataInfo((1, 2, 2), 17))
    >>> x = gm.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])
    >>> m.nll((x,), generator=gm.Generator().manual_seed(0)).shape
    gmcore.Size([1])
    >>> s = m.sample(3, generator=gm.Generator().manual_seed(0))
    >>> s.shape, bool(((s * 16).round() - s * 16).abs().max() < 1e-5)   # on the 17 levels
    (gmcore.Size([3, 1, 2, 2]), True)
    """

    preprocess = "affine"      # or "logit"
    logit_alpha = 0.05         # logit preprocessing squeezes [0, 1) into [a, 1 - a) first
    flat_input = False         # True: images reach the flow as (B, D) vectors
    SampleOptions = FlowSampleOptions
    EvalOptions = FlowEvalOptions

    def __init__(self, config, data: DataInfo):
        super().__init__(config, data)
        self.continuous = data.num_levels == 0
        name = data.name or "the data"
        if self.continuous and len(data.shape) != 1:
            raise ValueError(f"{type(self).__name__}: continuous data must be vectors (D,), "
                             f"{name} has shape {tuple(data.shape)}")
        if not self.continuous and (len(data.shape) != 3 or data.num_levels < 2):
            raise ValueError(f"{type(self).__name__} models continuous points (D,) or images "
                             f"(C, H, W) with discrete levels; {name} has shape "
                             f"{tuple(data.shape)} and {data.num_levels} levels")
        if self.preprocess not in ("affine", "logit"):
            raise ValueError(f"preprocess must be 'affine' or 'logit', got {self.preprocess!r}")
        self.flow_shape = (data.dims,) if self.flat_input else tuple(data.shape)
        self.dequantizer = self._build_dequantizer(config, name)

    def _build_dequantizer(self, config, name):
        """The variational dequantizer the config asks for, or None (uniform noise); refuses
        each data-noise option on the data it does not fit (dequantization on continuous points,
        ``--noise-std`` on images)."""
        kind = getattr(config, "dequantization", "uniform")
        if kind not in DEQUANTIZATIONS:
            raise ValueError(f"dequantization must be one of {DEQUANTIZATIONS}, got {kind!r}")
        if self.continuous and self.dequant_samples != 1:
            raise ValueError(f"{type(self).__name__}: --dequant-samples is for discrete images; "
                             f"{name} is continuous points, modelled as they are")
        if not self.continuous and self.noise_std > 0:
            raise ValueError(f"{type(self).__name__}: --noise-std is for continuous points; "
                             f"{name} is discrete images, dequantized instead")
        if kind == "uniform":
            return None
        if self.continuous:
            raise ValueError(f"{type(self).__name__}: --dequantization variational is for "
                             f"discrete images; {name} is continuous points, modelled as they are")
        return VariationalDequantizer(self.data.shape, config.dequant_hidden,
                                      config.dequant_couplings)

    @property
    def noise_std(self) -> float:
        """Std of the noise added to training points (``--noise-std``; 0 without the field)."""
        return float(getattr(self.config, "noise_std", 0.0))

    @property
    def dequant_samples(self) -> int:
        """Noise draws per image of the test bound (``--dequant-samples``; 1 without the field)."""
        return int(getattr(self.config, "dequant_samples", 1))

    @property
    def nll_kind(self):
        if self.continuous:
            return "exact (continuous density, nats)"
        kind = "variational dequantization bound" if self.dequantizer is not None \
            else "dequantization bound"
        k = self.dequant_samples
        return kind if k == 1 else f"{kind}, importance-weighted (k={k})"

    # ---- data <-> flow space ---------------------------------------------------------------
    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or not x.dtype.is_floating_point \
                or tuple(x.shape[1:]) != tuple(self.data.shape):
            got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__} expects float data of shape "
                             f"(B, {', '.join(map(str, self.data.shape))}), got {got}")
        return x

    def dequantize(self, x: Tensor, generator=None) -> tuple[Tensor, Tensor]:
        """``((level + u) / K, log q(u | level))`` for images in [0, 1] as ``level / (K - 1)``:
        ``u ~ U[0, 1)`` with ``log q = 0``, or the variational dequantizer's draw."""
        k = self.data.num_levels
        levels = (x * (k - 1)).round()
        if self.dequantizer is None:
            u = gc.rand(*x.shape, generator=generator, device=x.device, dtype=x.dtype)
            log_q = gc.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        else:
            u, log_q = self.dequantizer(levels / (k - 1), generator)
        return (levels + u) / k, log_q

    def to_flow_space(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Dequantized images in [0, 1) -> the flow's input ``(B, *flow_shape)`` and the map's
        log-determinant ``(B,)``."""
        b = x.shape[0]
        if self.preprocess == "logit":
            a = self.logit_alpha
            s = a + (1 - 2 * a) * x
            y = s.log() - (1 - s).log()
            # dy/dx = (1 - 2a) / (s (1 - s)) per dimension
            ld = (math.log(1 - 2 * a) - s.log() - (1 - s).log()).reshape(b, -1).sum(1)
        else:
            y = x - 0.5
            ld = gc.zeros(b, device=x.device, dtype=x.dtype)
        return y.reshape(b, *self.flow_shape), ld

    def from_flow_space(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`to_flow_space`: the flow's space -> [0, 1] data shape."""
        y = y.reshape(y.shape[0], *self.data.shape)
        if self.preprocess == "logit":
            a = self.logit_alpha
            return (y.sigmoid() - a) / (1 - 2 * a)
        return y + 0.5

    # ---- the model interface -------------------------------------------------------------
    def log_prob_points(self, x: Tensor) -> Tensor:
        """``log p(x)`` (B,) of continuous points (2-D toys)."""
        return self.flow.log_prob(x)

    def nll(self, batch, generator=None) -> Tensor:
        """Nats per example: ``-log p(x)`` for points; the dequantization bound for images,
        importance-weighted over ``dequant_samples`` noise draws when that is above 1."""
        x = self._check(batch[0])
        k = self.dequant_samples
        if self.continuous:
            if k != 1:
                raise ValueError(f"{type(self).__name__}: --dequant-samples {k} is for discrete "
                                 "images; continuous points have an exact density")
            return -self.log_prob_points(x)
        if k == 1:
            return self._dequantized_nll(x, generator)
        # one draw per row of (k, B): -log mean_k exp(-nll_k), Burda et al.'s estimator
        draws = [self._dequantized_nll(x, generator) for _ in range(k)]
        return metrics.iwae_bound(-_shape.stack(draws, 0))

    def _dequantized_nll(self, x: Tensor, generator=None) -> Tensor:
        """The one-draw bound ``-log p(x + u) + D log K + log q(u | x)`` (B,) of images."""
        x, log_q = self.dequantize(x, generator)
        y, ld = self.to_flow_space(x)
        dq = metrics.dequantization_nats(self.data.dims, self.data.num_levels)
        return -(self.flow.log_prob(y) + ld) + dq + log_q

    def loss(self, batch):
        x = self._check(batch[0])
        if not self.continuous:
            return self._dequantized_nll(x).mean() / (self.data.dims * metrics.LN2), {}
        if self.noise_std > 0:   # noise regularization: fresh noise each step
            x = x + self._point_noise(x)
        return -self.log_prob_points(x).mean(), {}

    def _point_noise(self, x: Tensor) -> Tensor:
        """Noise regularization's draw for a batch of points: ``N(0, (s sd_j)^2)`` per feature
        ``j``, ``sd_j`` the batch's standard deviation of that feature (a constant). In
        data-parallel training the batch is every rank's rows and the draw is batch-shaped (so
        sharded), so N ranks draw the one-process run's noise."""
        with no_grad():
            if distributed.get_world_size() > 1:
                sd = _global_std(x)
            else:
                sd = x.std(0) if x.shape[0] > 1 else None
        if sd is None:
            raise ValueError(f"{type(self).__name__}: --noise-std scales the noise by the "
                             "batch's standard deviation, which needs batches of 2 or more "
                             f"points, got {x.shape[0]}")
        return self.noise_std * sd * gc.randn(*x.shape, device=x.device, dtype=x.dtype)

    def sample_flow_space(self, n, generator=None, temperature=1.0) -> Tensor:
        """Draws in the flow's space (a model whose flow lacks ``sample`` overrides this)."""
        return self.flow.sample(n, generator=generator, temperature=temperature)

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        """``n`` samples (no autograd): points as drawn; images quantized to the levels, in
        [0, 1]. ``temperature`` scales the base draws."""
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}")
        # an overflowing inverse is reported once, by _blank_diverged, not by NumPy on the way
        with no_grad(), np.errstate(over="ignore", invalid="ignore"):
            y = self.sample_flow_space(int(n), generator=generator, temperature=temperature)
            if self.continuous:
                return y.reshape(y.shape[0], *self.data.shape)
            k = self.data.num_levels
            x = self.from_flow_space(y)
            x = self._blank_diverged(x)
            levels = (x * k).floor().clamp(0, k - 1)
            return levels / (k - 1)

    def _blank_diverged(self, x: Tensor) -> Tensor:
        """Pixels left undefined (NaN) by an inverse that overflowed become 0, with a warning.

        Inverting a flow far from its training data can overflow (a coupling divides by a scale
        that underflows): Glow at temperature 1 on digits, seed 1, loses about one draw in 1000.
        Such a draw stays in the sample set as a mostly blank image, so it counts against the
        sample-quality figures instead of being dropped from them."""
        bad = x.isnan()
        if not bool(bad.any()):
            return x
        images = int(bad.reshape(x.shape[0], -1).any(1).sum())
        warnings.warn(f"{type(self).__name__}.sample: {images} of {x.shape[0]} draws overflowed "
                      "in the flow's inverse; their undefined pixels are drawn as 0",
                      RuntimeWarning, stacklevel=3)
        return x.masked_fill(bad, 0.0)


def _global_std(x: Tensor):
    """Each feature's (unbiased) standard deviation over every rank's rows of ``x`` (B, D), or
    None when they hold fewer than 2 rows in all."""
    n, _, _, squares = global_moments(x, (0,))
    return (squares / (n - 1)).sqrt() if n >= 2 else None


class NumericalInverseDensity(FlowDensity):
    """A :class:`FlowDensity` whose transform (a :class:`FlowSequential`, or one flow) may hold
    layers without an analytic inverse (planar, radial): ``sample`` inverts layer by layer,
    calling ``numerical_inverse`` where a layer has one and ``inverse`` otherwise.

    >>> import gmcore as gm
    >>> from gmcore.nn.flows import StandardNormal
    >>> from gmcore.nn.flows.planar import Planar
    >>> _ = gm.manual_seed(0)
    >>> d = NumericalInverseDensity(StandardNormal((2,)), FlowSequential(Planar(2), Planar(2)))
    >>> x = d.sample(4, generator=gm.Generator().manual_seed(0))
    >>> z, _ = d.transform(x)                      # forward maps the samples back to the draws
    >>> z0 = StandardNormal((2,)).sample(4, generator=gm.Generator().manual_seed(0))
    >>> bool((z - z0).abs().max() < 1e-4)
    True
    """

    def sample(self, n, generator=None, context=None, temperature=1.0):
        p = next(iter(self.parameters()), None)
        z = self.base.sample(n, generator=generator, temperature=temperature,
                             device=p.device if p is not None else None,
                             dtype=p.dtype if p is not None else None)
        layers = list(self.transform) if isinstance(self.transform, FlowSequential) \
            else [self.transform]
        for f in reversed(layers):
            inv = getattr(f, "numerical_inverse", None) or f.inverse
            z, _ = inv(z, context)
        return z

