"""Neural-network functional ops (``import gmcore.nn.functional as F``)."""
from ...functional import *  # noqa: F401,F403
