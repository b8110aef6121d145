"""Neural-network functional ops (``import gmcore.nn.functional as F``).

Everything in ``gmcore.functional`` plus the layers' math: linear, convolutions, pooling,
resampling, normalization and losses.
"""
from ...functional import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .conv3d import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .vision import *  # noqa: F401,F403
from .fold import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .distance import *  # noqa: F401,F403
from .gumbel import *  # noqa: F401,F403
from .grid_sample import *  # noqa: F401,F403
from ...functional.pointwise import concat_elu  # noqa: F401  (PixelCNN++'s; not a torch op)
