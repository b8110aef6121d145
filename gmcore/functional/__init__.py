"""Differentiable operations, each written once with ``xp`` (NumPy or CuPy).

``gmcore.functional`` holds the tensor-level ops (also reachable as ``gmcore.<op>`` and as
tensor methods); ``gmcore.nn.functional`` adds the neural-network ops on top.
"""
from .arithmetic import *  # noqa: F401,F403
from .conversion import *  # noqa: F401,F403
from .shape import *  # noqa: F401,F403
from .reduction import *  # noqa: F401,F403
from .pointwise import *  # noqa: F401,F403
from .activation import *  # noqa: F401,F403
from .linalg import *  # noqa: F401,F403
from .indexing import *  # noqa: F401,F403
from .logsumexp import *  # noqa: F401,F403
from .dlml import *  # noqa: F401,F403
from .vq import *  # noqa: F401,F403
from .coupling import *  # noqa: F401,F403
from .flow_ops import *  # noqa: F401,F403
from .spline import *  # noqa: F401,F403
from .diffusion import *  # noqa: F401,F403
from .wavenet import *  # noqa: F401,F403
from .masked_conv import *  # noqa: F401,F403
from .causal_conv import *  # noqa: F401,F403
from .sorting import *  # noqa: F401,F403
from .arrange import *  # noqa: F401,F403
from .closeness import *  # noqa: F401,F403
from .inplace import *  # noqa: F401,F403
