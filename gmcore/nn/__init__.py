"""Neural-network building blocks. ``gmcore.nn.functional`` (imported as ``F``) holds the ops."""
from . import functional  # noqa: F401
