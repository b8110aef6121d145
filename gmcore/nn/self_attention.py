"""SAGAN's self-attention block (Zhang, Goodfellow, Metaxas & Odena 2019, "Self-Attention
Generative Adversarial Networks"), with its projections as separate 1x1 convolutions so that
spectral normalisation can wrap each one, as SAGAN and BigGAN do.

``gmcore.nn.SelfAttention2d`` (the DDPM U-Net block, with a fused qkv weight, group norm and a
``residual="sagan"`` option) computes a related function; this block is the paper's form: no
normalisation, keys and values optionally max-pooled (BigGAN's and SAGAN's code), and one
Conv2d module per projection.
"""
from __future__ import annotations

from .. import creation
from . import functional as F
from .conv import Conv2d
from .module import Module
from .parameter import Parameter

__all__ = ["SAGANSelfAttention"]


class SAGANSelfAttention(Module):
    """``y = x + gamma * v(sum_i beta_{j,i} h(x_i))`` over the positions of an (N, C, H, W) map.

    With the paper's names (section 3): ``f`` (keys), ``g`` (queries) and ``h`` (values) are 1x1
    convolutions from C to C / ``reduction`` channels (8 in the paper; at least 1), ``v`` a 1x1
    convolution back to C; ``s_ij = f(x_i)^T g(x_j)``, ``beta_{j,i} = softmax_i(s_ij)`` (no
    1/sqrt(d) scaling, as the paper), and the output at position j is
    ``x_j + gamma * v(sum_i beta_{j,i} h(x_i))``. ``gamma`` is a learnable scalar initialised to
    0, so the block starts as the identity and the networks first rely on local convolutions.
    ``pool=True`` max-pools the keys' and values' maps by 2 (4x fewer positions i; SAGAN's and
    BigGAN's released code), which needs even H and W.

    >>> import gmcore as gm
    >>> block = gm.nn.SAGANSelfAttention(16)
    >>> x = gm.randn(2, 16, 4, 4)
    >>> bool((block(x) - x).abs().max() == 0)       # gamma = 0: the identity at first
    True
    >>> [n for n, _ in block.named_children()]
    ['f', 'g', 'h', 'v']
    """

    def __init__(self, channels: int, reduction: int = 8, pool: bool = False, device=None, dtype=None):
        super().__init__()
        if int(channels) < 1 or int(reduction) < 1:
            raise ValueError(f"SAGANSelfAttention: channels and reduction must be positive, got "
                             f"{channels} and {reduction}")
        c = self.channels = int(channels)
        k = self.inner = max(1, c // int(reduction))
        self.pool = bool(pool)
        kw = {"bias": False, "device": device, "dtype": dtype}   # SAGAN's 1x1 projections carry no bias
        self.f, self.g, self.h = Conv2d(c, k, 1, **kw), Conv2d(c, k, 1, **kw), Conv2d(c, k, 1, **kw)
        self.v = Conv2d(k, c, 1, **kw)
        self.gamma = Parameter(creation.zeros(1, device=device, dtype=dtype))

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"SAGANSelfAttention({self.channels}) expects (N, {self.channels}, H, W), got "
                             f"shape {tuple(x.shape)}")
        n, c, hh, ww = x.shape
        keys, values = self.f(x), self.h(x)
        if self.pool:
            if hh % 2 or ww % 2:
                raise ValueError(f"SAGANSelfAttention(pool=True) needs even H and W, got {hh}x{ww}")
            keys, values = F.max_pool2d(keys, 2), F.max_pool2d(values, 2)
        q = self.g(x).reshape(n, self.inner, hh * ww)                      # (N, k, J)
        keys = keys.reshape(n, self.inner, -1)                             # (N, k, I)
        values = values.reshape(n, self.inner, -1)                         # (N, k, I)
        beta = F.softmax(q.transpose(1, 2) @ keys, dim=-1)                 # (N, J, I): softmax over i
        o = (values @ beta.transpose(1, 2)).reshape(n, self.inner, hh, ww)  # (N, k, J)
        return x + self.gamma * self.v(o)

    def extra_repr(self):
        return f"{self.channels}, inner={self.inner}, pool={self.pool}"
