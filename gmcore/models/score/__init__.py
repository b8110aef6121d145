"""Score-based models (Song & Ermon 2019, Song et al. 2020): a network estimates the score
grad_x log p(x) (of the data perturbed by noise of known scales) and samples are drawn by
(annealed) Langevin dynamics. The objectives and samplers are library functions in
:mod:`gmcore.score`; importing this package registers the models for ``gmcore train``."""

from .score_mlp import ScoreMLP  # noqa: F401,E402  (registers score-mlp)
from .ncsn import NCSN  # noqa: F401,E402  (registers ncsn)
