"""Small networks shared by the latent-variable models."""
from __future__ import annotations

from ... import nn


def mlp(d_in: int, hidden: int, layers: int, d_out: int, act=None) -> nn.Sequential:
    """``layers`` hidden Linear layers of width ``hidden`` with ``act`` (default ELU), then a
    linear output layer."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), (act or nn.ELU)()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)
