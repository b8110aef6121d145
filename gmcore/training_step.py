"""One step of the training loop as a model sees it: :class:`TrainingStep` (its optimizers by
name, more batches, the update that keeps the loop's guarantees), the default single-loss step,
and what ``--ema`` averages. The loop itself is :func:`gmcore.train._loop`."""
from __future__ import annotations

import math

__all__ = ["TrainingStep", "one_step", "ema_target"]


def ema_target(model):
    """What ``--ema`` averages: the module the model's ``ema_module()`` names (a GAN's generator),
    or the whole model."""
    own = getattr(model, "ema_module", None)
    return own() if own is not None else model


class TrainingStep:
    """What one step of the loop hands a model's ``training_step(batch, step)``: its optimizers by
    name, more batches, and the update that keeps the loop's guarantees.

    ``update(name, loss)`` zeroes the gradients of optimizer ``name``'s parameters, backpropagates
    ``loss``, clips them (``--grad-clip``), and steps that optimizer; it refuses a non-finite
    loss, and returns the loss as a float. ``next_batch()`` draws the next batch from the run's
    loader (a critic's extra updates). ``number`` is the index of this step (0 for the first),
    the same after a resume. A second Ctrl-C after the first update of a step leaves the last
    checkpoint as it is (the networks are half-updated); before it, the step is rewound.

    A GAN's step, two critic updates per generator update::

        def training_step(self, batch, step):
            for i in range(2):
                real = batch[0] if i == 0 else step.next_batch()[0]
                d = step.update("discriminator", self.critic_loss(real))
            g = step.update("generator", self.generator_loss(real.shape[0]))
            return {"d_loss": d, "g_loss": g}
    """

    def __init__(self, run, batches, number: int):
        self._run, self._batches = run, batches
        self.number = number
        self.optimizers = run.optimizers
        self.phase = "draw"    # "update" once an optimizer has stepped

    def next_batch(self):
        return next(self._batches)

    def update(self, name: str, loss) -> float:
        opt = self.optimizers.get(name)
        if opt is None:
            raise KeyError(f"no optimizer named {name!r}; this model's: {', '.join(self.optimizers)}")
        value = loss.item()  # one device sync per update, reused by the caller
        if not math.isfinite(value):
            what = "loss" if name == "main" else f"the {name} loss"
            raise FloatingPointError(f"{what} became {value} at step {self.number}; lower --lr or enable "
                                     "--grad-clip")
        opt.zero_grad()
        loss.backward()
        # under mpiexec: the mean over the ranks, i.e. the gradient of the global batch's loss
        self._run.dp.average_gradients([p for g in opt.param_groups for p in g["params"]])
        if self._run.tcfg.grad_clip:
            from .nn.utils import clip_grad_norm_
            clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self._run.tcfg.grad_clip)
        self.phase = "update"
        opt.step()
        return value


def one_step(model, batch, step: TrainingStep) -> dict:
    """One step's logs: the model's own ``training_step``, or the single loss on "main"."""
    own = getattr(model, "training_step", None)
    if own is not None:
        logs = own(batch, step)
        if not isinstance(logs, dict):
            raise TypeError(f"{model.model_name}.training_step must return a dict of floats to log, "
                            f"got {type(logs).__name__}")
        return logs
    loss, logs = model.loss(batch)
    return {"loss": step.update("main", loss), **logs}
