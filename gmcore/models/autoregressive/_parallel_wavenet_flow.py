"""Parallel WaveNet's student: an inverse autoregressive flow made of small WaveNets
(van den Oord et al. 2018, "Parallel WaveNet: Fast High-Fidelity Speech Synthesis", Sec. 2.2).

Flow k maps x^{k-1} (B, T) to x^k_t = x^{k-1}_t * s^k_t + mu^k_t, where (mu^k_t, log s^k_t) come
from a WaveNet over x^{k-1}_{<t} only (the input is shifted right by one step before a causal
conv). Starting from logistic noise x^0 = z, the composition is

    x^K_t = z_t * S_t + M_t,   S_t = prod_k s^k_t,   M_t = sum_k mu^k_t prod_{j>k} s^j_t,

and S_t, M_t depend on z_{<t} only, so p_S(x_t | z_{<t}) is a logistic with mean M_t and scale
S_t: one parallel pass gives the sample and its exact log-density
log p_S(x) = sum_t [log p_logistic(z_t) - log S_t]. Inverting the flow (for the density of
given audio) is sequential: :meth:`IAFStudent.inverse` runs each flow step by step through the
WaveNet generation queues.
"""
from __future__ import annotations

import math

from ... import creation as gc
from ... import functional as gf
from ... import nn
from ...autograd import no_grad
from ...nn import functional as F
from ...tensor import Tensor

__all__ = ["IAFFlow", "IAFStudent", "logistic_noise", "logistic_log_pdf"]


def logistic_noise(shape, generator=None, dtype=None, device=None) -> Tensor:
    """Standard logistic draws log(u) - log(1 - u), u uniform in [1e-6, 1 - 1e-6]."""
    u = gc.rand(*shape, generator=generator, dtype=dtype, device=device).clamp(1e-6, 1 - 1e-6)
    return u.log() - (1.0 - u).log()


def logistic_log_pdf(z: Tensor) -> Tensor:
    """log density of the standard logistic at z: -z - 2 softplus(-z)."""
    return -z - 2.0 * F.softplus(-z)


class IAFFlow(nn.Module):
    """One flow: (mu, log s) (B, T) each from x (B, T), column t seeing x_{<t} only.

    Input layer: a kernel-2 causal conv on x shifted right by one step (taps x_{t-1}, x_{t-2});
    then a :class:`gmcore.nn.WaveNetStack` (dilations 1 .. 2^(layers-1)) and a
    ReLU -> 1x1 -> ReLU -> 1x1 head to 2 channels. The last 1x1 starts at zero weights with
    bias (0, ``log_scale_init``): the flow starts as a fixed affine map.
    """

    def __init__(self, channels, gate_channels, skip_channels, head_channels, layers, kernel_size=2,
                 log_scale_init=0.0):
        super().__init__()
        self.inp = nn.CausalConv1d(1, channels, kernel_size=2)
        self.stack = nn.WaveNetStack(channels, gate_channels, skip_channels, layers, 1, kernel_size)
        self.out1 = nn.Conv1d(skip_channels, head_channels, 1)
        self.out2 = nn.Conv1d(head_channels, 2, 1)
        with no_grad():
            self.out2.weight.data[...] = 0
            self.out2.bias.data[...] = 0
            self.out2.bias.data[1] = log_scale_init

    @property
    def receptive_field(self) -> int:
        """Past samples x_{t-1} .. x_{t-r} that (mu_t, s_t) see."""
        return self.stack.receptive_field

    def forward(self, x: Tensor):
        B, T = x.shape
        shifted = gf.cat([gc.zeros(B, 1, dtype=x.dtype, device=x.device), x[:, :T - 1]], 1)
        _, skip = self.stack(self.inp(shifted.unsqueeze(1)))
        h = self.out1.weight.squeeze(-1).matmul(skip.relu()) + self.out1.bias.unsqueeze(-1)
        o = self.out2.weight.squeeze(-1).matmul(h.relu()) + self.out2.bias.unsqueeze(-1)
        return o[:, 0], o[:, 1]

    def inverse(self, y: Tensor):
        """(x, sum of log s (B,)) with forward-map(x) = y, solved for x one step at a time:
        x_t = (y_t - mu_t(x_<t)) / s_t(x_<t), the stack run through its generation queues."""
        B, T = y.shape
        w = self.inp.weight.data                      # (C, 1, 2): taps x_{t-2}, x_{t-1}
        b = self.inp.bias.data
        w1 = self.out1.weight.squeeze(-1)
        w2 = self.out2.weight.squeeze(-1)
        xs, log_det = [], 0.0
        with no_grad():
            state = self.stack.generation_state(B)
            prev2 = prev1 = gc.zeros(B, 1, dtype=y.dtype, device=y.device).data
            for t in range(T):
                h = prev2 * w[:, 0, 0] + prev1 * w[:, 0, 1] + b                  # (B, C)
                skip = Tensor(state.step(h))
                o = F.linear(F.linear(skip.relu(), w1, self.out1.bias).relu(), w2, self.out2.bias)
                x_t = (y[:, t] - o[:, 0]) * (-o[:, 1]).exp()
                log_det = log_det + o[:, 1]
                xs.append(x_t)
                prev2, prev1 = prev1, x_t.data.reshape(B, 1)
        return gf.stack(xs, 1), log_det


class IAFStudent(nn.Module):
    """K :class:`IAFFlow` s composed; starts as x = z * ``init_scale`` (each flow's scale
    ``init_scale^(1/K)``).

    >>> import gmcore as gm
    >>> st = IAFStudent(flows=2, channels=4, gate_channels=4, skip_channels=4, head_channels=4,
    ...                 layers=2)
    >>> z = logistic_noise((3, 10), generator=gm.Generator().manual_seed(0))
    >>> x, mu, log_scale = st(z)
    >>> bool(((x - (mu + log_scale.exp() * z)).abs() < 1e-5).all()), tuple(x.shape)
    (True, (3, 10))
    """

    def __init__(self, flows=4, channels=16, gate_channels=16, skip_channels=32, head_channels=32,
                 layers=8, kernel_size=2, init_scale=0.1):
        super().__init__()
        if flows < 1:
            raise ValueError(f"IAFStudent needs at least one flow, got {flows}")
        per_flow = math.log(init_scale) / flows
        self.flows = nn.ModuleList([IAFFlow(channels, gate_channels, skip_channels, head_channels,
                                            layers, kernel_size, per_flow) for _ in range(flows)])

    @property
    def receptive_field(self) -> int:
        """Noise values z_{t-1} .. z_{t-r} that x_t depends on (besides z_t)."""
        return sum(f.receptive_field for f in self.flows)

    def forward(self, z: Tensor):
        """(x, M, log S), each (B, T): the sample x = z * S + M and the composed logistic's
        mean M and log-scale log S (functions of z_{<t})."""
        x, mean, log_scale = z, None, None
        for flow in self.flows:
            mu, log_s = flow(x)
            x = x * log_s.exp() + mu
            mean = mu if mean is None else mean * log_s.exp() + mu
            log_scale = log_s if log_scale is None else log_scale + log_s
        return x, mean, log_scale

    def log_prob_of_noise(self, z: Tensor, log_scale: Tensor) -> Tensor:
        """log p_S(x) (B,) in nats of the sample made from ``z`` (the forward's log S)."""
        return (logistic_log_pdf(z) - log_scale).sum(1)

    def inverse(self, x: Tensor):
        """(z, log p_S(x) (B,)): the noise that gives ``x`` and the exact log-density, by
        inverting the flows last to first, each step by step (T x flows network steps)."""
        log_det = 0.0
        for flow in reversed(list(self.flows)):
            x, ld = flow.inverse(x)
            log_det = log_det + ld
        return x, logistic_log_pdf(x).sum(1) - log_det
