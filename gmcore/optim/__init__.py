"""Optimizers, learning-rate schedulers and parameter averaging (``torch.optim``'s names).

>>> import gmcore as gm
>>> w = gm.tensor([3.0], requires_grad=True)
>>> opt = gm.optim.Adam([w], lr=0.5)
>>> for _ in range(50):
...     opt.zero_grad()
...     loss = (w ** 2).sum()
...     loss.backward()
...     opt.step()
>>> abs(w.item()) < 0.5
True
"""
from .optimizer import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .ema import EMA
from . import lr_scheduler

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "EMA", "lr_scheduler"]
