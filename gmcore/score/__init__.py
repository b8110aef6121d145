"""Score matching and Langevin sampling as library functions.

A score model s(x) estimates grad_x log p(x). The objectives train it from samples of p alone
(denoising score matching, sliced score matching, and the exact objective with the Jacobian's
trace for low dimensions); the samplers draw from p with it (Langevin dynamics, and annealed
Langevin over a decreasing sequence of noise scales as Song & Ermon 2019).

``import gmcore.score`` (as ``gmcore.schedules``) makes it ``gm.score``:

>>> import gmcore as gm
>>> import gmcore.score
>>> g = gm.Generator().manual_seed(0)
>>> x = gm.randn(512, 2, generator=g)                      # data from N(0, I)
>>> true = lambda x: -x                                     # its score: Jacobian -I
>>> exact = gm.score.exact_score_matching_loss(true, x)    # mean of tr(J) + |s|^2 / 2
>>> sliced = gm.score.ssm_loss(true, x, generator=g)        # v^T J v = -2 for every +-1 v
>>> round(float(exact), 4) == round(float(sliced), 4)
True
>>> sigmas = gm.score.geometric_sigmas(1.0, 0.01, 10)       # 1.0 ... 0.01, descending
>>> noised = lambda x, sigma: -x / (1.0 + sigma.reshape(-1, 1) ** 2)   # N(0, I) noised by sigma
>>> loss = gm.score.dsm_loss(noised, x, sigmas, generator=g)           # sigma^2-weighted DSM
>>> y = gm.score.annealed_langevin(noised, gm.zeros(2000, 2), sigmas, eps=5e-5, steps_per_sigma=50,
...                                generator=g)
>>> round(float(y.std()), 1)                               # back to N(0, I)
1.0
"""

from .dsm import dsm_loss  # noqa: E402,F401
from .langevin import annealed_langevin, geometric_sigmas, langevin  # noqa: E402,F401
from .exact import exact_score_matching_loss  # noqa: E402,F401
from .ssm import ssm_loss  # noqa: E402,F401
