"""Adversarial losses and penalties, as functions of the discriminator's outputs.

``real`` and ``fake`` are the discriminator's (critic's) raw outputs, logits for the
probabilistic losses, on a batch of data and a batch of generated samples; every loss is a mean
over the batch. The discriminator minimises :func:`discriminator_loss`, the generator
:func:`generator_loss`, with one of these ``kind``\\ s:

=================  ==================================  ==========================
kind               discriminator                       generator
=================  ==================================  ==========================
``minimax``        -log D(x) - log(1 - D(G(z)))        log(1 - D(G(z)))
``nonsaturating``  same                                -log D(G(z))
``wasserstein``    C(G(z)) - C(x)                      -C(G(z))
``least_squares``  (D(x) - 1)^2 / 2 + D(G(z))^2 / 2    (D(G(z)) - 1)^2 / 2
``hinge``          relu(1 - D(x)) + relu(1 + D(G(z)))  -D(G(z))
=================  ==================================  ==========================

with D = sigmoid(logit) for the first two (computed from the logits by softplus, never through
a saturated sigmoid): Goodfellow et al. 2014 (minimax; the non-saturating generator loss is
their practical suggestion), Arjovsky et al. 2017 (Wasserstein, with :func:`clip_weights_`),
Mao et al. 2017 (least squares, a-b-c = 0-1-1), Lim & Ye 2017 / Miyato et al. 2018 (hinge).
The gradient penalties: :func:`gradient_penalty` (WGAN-GP, Gulrajani et al. 2017) and
:func:`r1_penalty` (Mescheder et al. 2018).

>>> import gmcore as gm
>>> from gmcore.nn import gan
>>> real, fake = gm.tensor([2.0, 1.0]), gm.tensor([-1.0, 0.5])
>>> round(gan.discriminator_loss(real, fake, "hinge").item(), 4)      # (0 + 0 + 0 + 1.5) / 2
0.75
>>> round(gan.generator_loss(fake, "wasserstein").item(), 4)
0.25
"""
from __future__ import annotations

import numpy as np

from .. import autograd, backend
from .. import functional as gf
from ..autograd import Function
from ..creation import eye, rand, randint
from ..tensor import Tensor
from . import functional as F
from .module import Module
from .parameter import Buffer, Parameter

__all__ = ["KINDS", "discriminator_loss", "generator_loss", "gradient_penalty", "r1_penalty", "clip_weights_",
           "feature_matching_loss", "MinibatchDiscrimination", "HistoricalAverage", "VirtualBatchNorm2d", "PhaseShuffle",
           "orthogonal_regularization", "categorical_code_log_likelihood", "gaussian_code_log_likelihood",
           "info_loss", "ImagePool"]

KINDS = ("minimax", "nonsaturating", "wasserstein", "least_squares", "hinge")


def _check(kind: str, *outputs) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(KINDS)}")
    for name, t in zip(("real", "fake"), outputs):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be the discriminator's output Tensor, got {type(t).__name__}")


def discriminator_loss(real: Tensor, fake: Tensor, kind: str = "nonsaturating",
                       real_label: float = 1.0) -> Tensor:
    """The discriminator's (critic's) loss on its outputs for data (``real``) and samples
    (``fake``, usually computed from detached samples). ``real_label`` < 1 is one-sided label
    smoothing (Salimans et al. 2016: the real target 0.9, the fake one stays 0), for the
    probabilistic losses (``minimax``, ``nonsaturating``, ``least_squares``) only."""
    _check(kind, real, fake)
    if real_label != 1.0 and kind not in ("minimax", "nonsaturating", "least_squares"):
        raise ValueError(f"real_label (one-sided label smoothing) applies to the probabilistic losses, "
                         f"not to {kind!r}")
    if kind in ("minimax", "nonsaturating"):
        # binary cross-entropy with logits: target t gives t * softplus(-r) + (1 - t) * softplus(r)
        real_term = F.softplus(-real) if real_label == 1.0 else \
            real_label * F.softplus(-real) + (1.0 - real_label) * F.softplus(real)
        return real_term.mean() + F.softplus(fake).mean()
    if kind == "wasserstein":
        return fake.mean() - real.mean()
    if kind == "least_squares":
        return 0.5 * ((real - real_label) ** 2).mean() + 0.5 * (fake ** 2).mean()
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def generator_loss(fake: Tensor, kind: str = "nonsaturating") -> Tensor:
    """The generator's loss on the discriminator's outputs for its samples (see the table)."""
    _check(kind, fake)
    if kind == "minimax":
        return -F.softplus(fake).mean()         # log(1 - sigmoid(f)) = -softplus(f)
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()         # -log sigmoid(f)
    if kind == "least_squares":
        return 0.5 * ((fake - 1.0) ** 2).mean()
    return -fake.mean()                         # wasserstein, hinge


def _input_gradients(critic, x: Tensor) -> Tensor:
    """d critic(x).sum() / dx, itself differentiable (create_graph) so a penalty on it trains the
    critic; (B, -1)."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (g,) = autograd.grad(out.sum(), x, create_graph=True)
    return g.reshape(x.shape[0], -1)


def gradient_penalty(critic, real: Tensor, fake: Tensor, generator=None, center: float = 1.0) -> Tensor:
    """WGAN-GP's penalty ``mean((||grad_x critic(x_hat)||_2 - center)^2)`` at
    ``x_hat = eps * real + (1 - eps) * fake``, with one ``eps ~ U(0, 1)`` *per example* (not per
    element: drawing it per pixel, a known slip, penalises points off the lines between pairs).
    Multiply by lambda (10 in the paper) and add to the critic's loss.

    >>> import gmcore as gm
    >>> from gmcore.nn import gan
    >>> critic = gm.nn.Linear(3, 1, bias=False)
    >>> critic.weight.data[...] = [[3.0, 0.0, 4.0]]          # a gradient of norm 5 everywhere
    >>> round(gan.gradient_penalty(critic, gm.randn(4, 3), gm.randn(4, 3)).item(), 4)   # (5 - 1)^2
    16.0
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real and fake batches must have one shape, got "
                         f"{tuple(real.shape)} and {tuple(fake.shape)}")
    from .. import creation

    eps = creation.rand(real.shape[0], *([1] * (real.ndim - 1)), generator=generator, device=real.device,
                        dtype=real.dtype)
    x_hat = eps * real.detach() + (1.0 - eps) * fake.detach()
    # the 1e-12 keeps the norm's own gradient finite where the critic's gradient vanishes
    norms = (_input_gradients(critic, x_hat) ** 2).sum(1).add(1e-12).sqrt()
    return ((norms - center) ** 2).mean()


def r1_penalty(critic, real: Tensor) -> Tensor:
    """R1: ``mean(||grad_x D(x)||^2) / 2`` on the data; multiply by gamma and add to the
    discriminator's loss (Mescheder et al. 2018)."""
    return 0.5 * (_input_gradients(critic, real) ** 2).sum(1).mean()


def clip_weights_(module, clip: float) -> None:
    """Clamp every parameter of ``module`` into ``[-clip, clip]`` in place (the original WGAN's
    Lipschitz constraint, applied after each critic update)."""
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    from ..autograd import no_grad

    with no_grad():
        for p in module.parameters():
            p.clamp_(-clip, clip)


class _OffDiagonalGram(Function):
    """``||W W^T * (1 - I)||_F^2`` of a matrix W (rows: filters) as one op. Backward: with
    ``O = (W W^T) * (1 - I)`` (symmetric), ``dR/dW = 4 O W``; from the arrays, or from Tensor
    ops when the backward is itself recorded (a gradient of this gradient)."""

    @staticmethod
    def forward(ctx, w):
        xp = backend.xp_of(w)
        off = w @ w.T
        off[xp.diag_indices(len(off))] = 0.0
        ctx.save_for_backward(w)
        ctx.off = off
        return (off * off).sum()

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        if autograd.is_grad_enabled():   # recorded: the same formula from differentiable ops
            off = (w @ w.transpose(0, 1)) * (1.0 - eye(w.shape[0], device=w.device, dtype=w.dtype))
            return g * 4.0 * (off @ w)
        return Tensor(g.data * 4.0 * (ctx.off @ w.data))


def orthogonal_regularization(module, exclude=()) -> Tensor:
    """BigGAN's orthogonal regulariser (Brock et al. 2019, eq. 3):
    ``sum over weights W of ||W W^T * (1 - I)||_F^2``, each weight of ``module`` (a Module, or
    an iterable of tensors) with two or more
    dims flattened to a matrix with one row per output filter (BigGAN's code; the paper writes
    ``W^T W`` with the filters as columns), so only the filters' mutual cosines are pushed to 0,
    not their norms. Biases, gains (1-D) and the parameters in ``exclude`` (BigGAN: the shared
    class embedding) are skipped. Multiply by beta (1e-4 in the paper) and add to the loss. Its
    gradient is ``4 ((W W^T) * (1 - I)) W``: twice the update BigGAN's code applies for the same
    beta (its ``ortho`` adds ``2 (...) W`` straight to the gradients).

    >>> import gmcore as gm
    >>> from gmcore.nn import gan
    >>> m = gm.nn.Linear(2, 2, bias=False)
    >>> m.weight.data[...] = [[1.0, 0.0], [1.0, 1.0]]       # W W^T = [[1, 1], [1, 2]]
    >>> gan.orthogonal_regularization(m).item()            # 1^2 + 1^2
    2.0
    """
    skip = {id(p) for p in exclude}
    params = module.parameters() if hasattr(module, "parameters") else module
    terms = [_OffDiagonalGram.apply(p.reshape(p.shape[0], -1)) for p in params
             if p.ndim >= 2 and id(p) not in skip]
    if not terms:
        raise ValueError("orthogonal_regularization: the module has no weight with two or more dims")
    return terms[0] if len(terms) == 1 else gf.stack(terms).sum()


# ---- InfoGAN's mutual-information term (Chen et al. 2016) -----------------------------------------

def categorical_code_log_likelihood(logits: Tensor, codes: Tensor) -> Tensor:
    """``E[log Q(c | x)]`` for a categorical code: the batch mean of ``log_softmax(logits)`` at
    the drawn categories ``codes`` (B,) (minus the cross-entropy). Plus ``H(c) = log K`` for a
    uniform code, it is InfoGAN's lower bound of the mutual information I(c; G(z, c))."""
    return -F.cross_entropy(logits, codes)


def gaussian_code_log_likelihood(mean: Tensor, codes: Tensor, log_std=0.0) -> Tensor:
    """``E[log Q(c | x)]`` for continuous codes ``codes`` (B, C) under Q's factored Gaussian
    N(mean, exp(log_std)^2): summed over the C codes, averaged over the batch. ``log_std`` is
    Q's output (B, C) or a fixed number (0: unit variance, the InfoGAN authors' MNIST setting)."""
    if mean.shape != codes.shape:
        raise ValueError(f"gaussian_code_log_likelihood: mean {tuple(mean.shape)} and codes "
                         f"{tuple(codes.shape)} must have one shape")
    if isinstance(log_std, Tensor):
        z = (codes - mean) * (-log_std).exp()
        log_density = -0.5 * z * z - log_std - 0.5 * np.log(2 * np.pi)
    else:
        z = (codes - mean) * float(np.exp(-log_std))
        log_density = -0.5 * z * z - (float(log_std) + 0.5 * np.log(2 * np.pi))
    return log_density.sum(1).mean()


def info_loss(cat_logits=None, cat_codes=None, cont_mean=None, cont_codes=None, cont_log_std=0.0,
              cont_weight: float = 1.0) -> Tensor:
    """InfoGAN's information loss ``-(E log Q(c_cat | x) + cont_weight * E log Q(c_cont | x))``:
    ``-L_I`` with the constant ``H(c)`` left out (the discrete part weighted 1, the continuous
    part ``cont_weight``, as the paper's lambda). Add it to both the generator's and Q's losses;
    either kind of code may be absent (None).

    >>> import gmcore as gm
    >>> from gmcore.nn import gan
    >>> logits = gm.tensor([[0.0, 0.0], [0.0, 0.0]])          # Q undecided between 2 categories
    >>> round(gan.info_loss(logits, gm.tensor([0, 1])).item(), 4)   # log 2: L_I = H(c) - log 2 = 0
    0.6931
    >>> mean, c = gm.tensor([[0.5]]), gm.tensor([[1.5]])      # unit variance: 1/2 + 1/2 log(2 pi)
    >>> round(gan.info_loss(cont_mean=mean, cont_codes=c, cont_weight=0.1).item(), 4)
    0.1419
    """
    if cat_logits is None and cont_mean is None:
        raise ValueError("info_loss needs a categorical code (cat_logits, cat_codes), continuous codes "
                         "(cont_mean, cont_codes) or both")
    terms = []
    if cat_logits is not None:
        terms.append(-categorical_code_log_likelihood(cat_logits, cat_codes))
    if cont_mean is not None:
        terms.append(-cont_weight * gaussian_code_log_likelihood(cont_mean, cont_codes, cont_log_std))
    return terms[0] if len(terms) == 1 else terms[0] + terms[1]


# ---- Improved techniques for training GANs (Salimans et al. 2016) ------------------------------

def feature_matching_loss(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """Feature matching: the generator matches the mean of the discriminator's hidden features
    on data, ``||mean f(x) - mean f(G(z))||^2`` (the data side is a target: no gradient)."""
    diff = real_features.detach().mean(0) - fake_features.mean(0)
    return (diff ** 2).sum()


class MinibatchDiscrimination(Module):
    """Minibatch discrimination: lets the discriminator see how alike the examples of a batch
    are, so a collapsed generator (all samples alike) is easy to spot. Features f (N, A) are
    projected by a tensor T (A, B, C) to M (N, B, C); for each of the B kernels,
    ``o(x_i)_b = sum_{j != i} exp(-||M_i,b - M_j,b||_1)``; the output is f with o beside it,
    (N, A + B).

    >>> import gmcore as gm
    >>> layer = gm.nn.gan.MinibatchDiscrimination(6, kernels=4, kernel_dim=3)
    >>> layer(gm.randn(5, 6)).shape
    gmcore.Size([5, 10])
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int = 5):
        super().__init__()
        from ..creation import randn

        self.kernels, self.kernel_dim = int(kernels), int(kernel_dim)
        self.T = Parameter(randn(in_features, self.kernels * self.kernel_dim) * 0.1)

    def forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T).reshape(f.shape[0], self.kernels, self.kernel_dim)
        dist = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)            # (N, N, B)
        o = (-dist).exp().sum(1) - 1.0                                    # minus exp(0), each with itself
        return gf.cat([f, o], 1)


class HistoricalAverage(Module):
    """Historical averaging: ``||theta - mean of the past thetas||^2`` over ``module``'s
    parameters, a penalty added to that network's loss; :meth:`update` after each optimizer
    step adds the new parameters to the average (kept as buffers, so checkpoints hold it).

    >>> import gmcore as gm
    >>> net = gm.nn.Linear(2, 1)
    >>> hist = gm.nn.gan.HistoricalAverage(net)
    >>> hist.penalty(net).item()          # the average starts at the initial parameters
    0.0
    """

    def __init__(self, module: Module):
        super().__init__()
        from ..creation import tensor

        self.count = Buffer(tensor(1.0))   # parameter sets averaged so far: the initial one
        for i, p in enumerate(module.parameters()):
            setattr(self, f"avg{i}", Buffer(p.detach().clone()))
        self._n = len(list(module.parameters()))

    def _averages(self):
        return [getattr(self, f"avg{i}") for i in range(self._n)]

    def penalty(self, module: Module) -> Tensor:
        params = list(module.parameters())
        if len(params) != self._n:
            raise ValueError(f"HistoricalAverage tracks {self._n} parameters, the module has {len(params)}")
        return sum(((p - a) ** 2).sum() for p, a in zip(params, self._averages()))

    def update(self, module: Module) -> None:
        n = float(self.count.data) + 1.0
        for p, a in zip(module.parameters(), self._averages()):
            a.data[...] += (p.detach().data - a.data) / n
        self.count.data[...] = n


class VirtualBatchNorm2d(Module):
    """Virtual batch normalisation: each example is normalised with the statistics of a fixed
    reference batch together with itself (not of the batch it happens to be in), so the
    generator's output for one z never depends on the other z of the batch.

    The reference batch travels in the same forward pass: the first ``reference_size`` rows of
    the input are the reference examples (the generator prepends its fixed reference noise and
    drops those rows from its output). For every row, per channel, the mean and the mean of
    squares are ``(R * ref + own) / (R + 1)`` over the R reference rows' values and the row's
    own; the reference rows themselves are treated alike.

    >>> import gmcore as gm
    >>> vbn = gm.nn.gan.VirtualBatchNorm2d(3, reference_size=4)
    >>> vbn(gm.randn(6, 3, 2, 2)).shape
    gmcore.Size([6, 3, 2, 2])
    """

    def __init__(self, num_features: int, reference_size: int, eps: float = 1e-5):
        super().__init__()
        from ..creation import ones, zeros

        self.reference_size, self.eps = int(reference_size), float(eps)
        self.weight = Parameter(ones(num_features))
        self.bias = Parameter(zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        r = self.reference_size
        if x.ndim != 4 or x.shape[0] <= r:
            raise ValueError(f"VirtualBatchNorm2d: expects (R + N, C, H, W) with the {r} reference rows "
                             f"first, got shape {tuple(x.shape)}")
        ref = x[:r]
        ref_mean, ref_sq = ref.mean((0, 2, 3)), (ref ** 2).mean((0, 2, 3))
        own_mean, own_sq = x.mean((2, 3)), (x ** 2).mean((2, 3))          # (R + N, C)
        mean = (ref_mean * r + own_mean) / (r + 1)
        var = (ref_sq * r + own_sq) / (r + 1) - mean ** 2
        y = (x - mean[:, :, None, None]) / (var[:, :, None, None] + self.eps).sqrt()
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


# ---- phase shuffle (WaveGAN, Donahue et al. 2019) ----------------------------------------------

def _groups(shifts):
    """(shift k, the rows that have it) for each shift present."""
    return [(int(k), np.flatnonzero(shifts == k)) for k in np.unique(shifts)]


class _Shift(Function):
    """Phase shuffle's op: ``y[b, :, t] = x[b, :, r(t - k_b)]`` with ``r`` the reflection at the
    edges, i.e. reflect-pad by n and read the window starting at ``n - k_b``. Its adjoint
    (:class:`_ShiftAdjoint`) writes each gradient row into a padded buffer at that window and
    folds the padding back onto the positions it mirrors. Both copy slices for each of the at
    most 2n + 1 shifts present (a gather's backward, ``np.add.at``, took a fifth of a training
    step), and each one's backward is the other, so the gradient penalty's double backward
    goes through."""

    @staticmethod
    def forward(ctx, x, shifts, n):
        ctx.shifts, ctx.n = shifts, n
        xp = backend.xp_of(x)
        length = x.shape[2]
        left, right = x[:, :, 1:n + 1][:, :, ::-1], x[:, :, length - n - 1:length - 1][:, :, ::-1]
        padded = xp.concatenate([left, x, right], 2)
        y = xp.empty_like(x)
        for k, rows in _groups(shifts):
            rows = xp.asarray(rows)
            y[rows] = padded[rows, :, n - k:n - k + length]
        return y

    @staticmethod
    def backward(ctx, g):
        return _ShiftAdjoint.apply(g, ctx.shifts, ctx.n), None, None


class _ShiftAdjoint(Function):
    @staticmethod
    def forward(ctx, g, shifts, n):
        ctx.shifts, ctx.n = shifts, n
        xp = backend.xp_of(g)
        b, c, length = g.shape
        padded = xp.zeros((b, c, length + 2 * n), g.dtype)
        for k, rows in _groups(shifts):
            rows = xp.asarray(rows)
            padded[rows, :, n - k:n - k + length] = g[rows]
        gx = padded[:, :, n:n + length].copy()
        gx[:, :, 1:n + 1] += padded[:, :, :n][:, :, ::-1]                                   # mirrored x[1..n]
        gx[:, :, length - n - 1:length - 1] += padded[:, :, length + n:][:, :, ::-1]    # x[L-n-1..L-2]
        return gx

    @staticmethod
    def backward(ctx, gg):
        return _Shift.apply(gg, ctx.shifts, ctx.n), None, None


class PhaseShuffle(Module):
    """Shift each example's activations (B, C, L) along time by its own random integer ``k`` in
    ``[-n, n]``: ``y[b, :, t] = x[b, :, r(t - k_b)]`` where ``r`` reflects an index at the edges
    (``r(-1) = 1``, ``r(L) = L - 2``), as reflect padding by ``|k|`` then cropping. The shifts come
    from gmcore's CPU generator (in a run's checkpoint: a resumed run draws the same ones). The
    identity in eval mode and for ``n = 0``. The gradient goes back to the positions each output
    was read from.

    >>> import gmcore as gm
    >>> shuffle = gm.nn.gan.PhaseShuffle(2)
    >>> shuffle(gm.randn(4, 3, 16)).shape
    gmcore.Size([4, 3, 16])
    """

    def __init__(self, n: int = 2):
        super().__init__()
        if int(n) < 0:
            raise ValueError(f"PhaseShuffle: n must be >= 0, got {n}")
        self.n = int(n)

    def forward(self, x: Tensor, shifts: Tensor = None) -> Tensor:
        """``shifts`` (B,) int64 in [-n, n] replaces the random draw (for tests)."""
        if x.ndim != 3:
            raise ValueError(f"PhaseShuffle expects (B, C, L) activations, got shape {tuple(x.shape)}")
        if (self.n == 0 or not self.training) and shifts is None:
            return x
        b, _, length = x.shape
        if length <= self.n:
            raise ValueError(f"PhaseShuffle: reflecting a shift of up to {self.n} needs more than {self.n} "
                             f"positions, got length {length}")
        n = self.n
        if shifts is None:   # drawn by the CPU generator whatever the device: no device sync
            shifts = randint(-n, n + 1, (b,)).numpy()
        else:
            shifts = np.asarray(shifts.cpu().numpy() if isinstance(shifts, Tensor) else shifts, np.int64)
            if shifts.shape != (b,) or np.abs(shifts).max() > n:
                raise ValueError(f"PhaseShuffle: shifts must be ({b},) integers in [-{n}, {n}]")
        return _Shift.apply(x, shifts, n)

    def extra_repr(self):
        return f"n={self.n}"


class ImagePool(Module):
    """A history of generated images for the discriminator (Shrivastava et al. 2017, as CycleGAN
    uses it): :meth:`query` stores each new fake until ``capacity`` are held and returns it as
    is; once full, each new fake is, with probability 1/2, swapped for a random stored one (the
    stored one is returned, the new one takes its place), else returned as is. The discriminator
    then also sees fakes of older generators, which damps oscillation. The pool is a buffer, so
    checkpoints hold it; the draws come from gmcore's CPU generator. ``capacity`` 0: no pool.

    >>> import gmcore as gm
    >>> _ = gm.manual_seed(0)
    >>> pool = gm.nn.gan.ImagePool(2, (1, 2, 2))
    >>> out = pool.query(gm.ones(3, 1, 2, 2))     # fills the two slots; the third may swap
    >>> out.shape, int(pool.count.item())
    (gmcore.Size([3, 1, 2, 2]), 2)
    """

    def __init__(self, capacity: int, shape, dtype=None, device=None):
        super().__init__()
        if int(capacity) < 0:
            raise ValueError(f"ImagePool: capacity must be >= 0, got {capacity}")
        from ..creation import tensor, zeros

        self.capacity = int(capacity)
        self.shape = tuple(int(s) for s in shape)
        self.images = Buffer(zeros(self.capacity, *self.shape, dtype=dtype, device=device))
        self.count = Buffer(tensor(0, device=device))   # slots filled so far

    def query(self, images: Tensor) -> Tensor:
        """The images (B, *shape) the discriminator should see in place of ``images`` (detached)."""
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"ImagePool holds images of shape {self.shape}, got a batch of shape "
                             f"{tuple(images.shape)}")
        x = images.detach()
        if self.capacity == 0:
            return x
        n = x.shape[0]
        # drawn by the CPU generator whatever the device: no device sync (two draws per batch)
        swap = (rand(n).numpy() > 0.5).tolist()
        slot = randint(0, self.capacity, (n,)).numpy().tolist()
        new, stored = x.data, self.images.data
        out = new.copy()
        count = int(self.count.item())
        for i in range(n):
            if count < self.capacity:      # not full yet: keep it, show it
                stored[count] = new[i]
                count += 1
            elif swap[i]:                  # half the time: show an old fake, keep the new one
                out[i] = stored[slot[i]]
                stored[slot[i]] = new[i]
        self.count.data[...] = count
        return Tensor(out)

    def extra_repr(self):
        return f"capacity={self.capacity}, shape={self.shape}"
