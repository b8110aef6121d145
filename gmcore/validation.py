"""Model selection on a held-out validation split, for ``gmcore train --val-split F``.

With ``--val-split F`` the training loop holds out a fraction ``F`` of the training set
(:func:`gmcore.data.split.validation_split`), scores it every ``--eval-every`` steps and at the
last step, and keeps the checkpoint of the step with the lowest validation NLL as
``best.safetensors``. The run's final figures (test NLL, samples, pictures) are those of that
step's weights, the model selection the density-estimation papers use (MAF and neural spline
flows early-stop on a validation set); ``--patience N`` also ends training once N validations in a
row bring no better NLL (early stopping). The test set is never used to choose anything.

>>> v = Validation(patience=2)
>>> [v.record(step, nll) for step, nll in [(100, 3.0), (200, 2.5), (300, 2.6), (400, 2.7)]]
[True, True, False, False]
>>> v.best_step, v.best_nll, v.exhausted
(200, 2.5, True)
"""
from __future__ import annotations

import math


class Validation:
    """The best validation NLL so far, its step, and the evaluations since (early stopping).

    Its ``state_dict`` goes into every checkpoint, so a resumed run picks and stops as the
    uninterrupted one would.
    """

    def __init__(self, patience: int = 0):
        self.patience = int(patience)
        self.best_nll = math.inf
        self.best_step: int | None = None
        self.bad_evals = 0          # validations in a row without a new best

    def record(self, step: int, nll: float) -> bool:
        """Note the validation NLL at ``step``; True when it is a new best (a NaN never is)."""
        if nll < self.best_nll:
            self.best_nll, self.best_step, self.bad_evals = float(nll), int(step), 0
            return True
        self.bad_evals += 1
        return False

    @property
    def exhausted(self) -> bool:
        """True once ``patience`` (> 0) validations in a row brought no new best."""
        return self.patience > 0 and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return {"best_nll": None if self.best_step is None else self.best_nll,
                "best_step": self.best_step, "bad_evals": self.bad_evals}

    def load_state_dict(self, state: dict) -> None:
        self.best_step = None if state["best_step"] is None else int(state["best_step"])
        self.best_nll = math.inf if self.best_step is None else float(state["best_nll"])
        self.bad_evals = int(state["bad_evals"])
