"""Normalizing-flow models (exact likelihood by change of variables): importing this package
registers them for ``gmcore train``. Shared plumbing (dequantization, bits/dim, sampling) is in
``_density.FlowModel``; one import line per model below."""
from .glow import Glow  # noqa: F401
from .linear_flow import LinearFlow  # noqa: F401
from .maf import MAF  # noqa: F401
from .nice import NICE  # noqa: F401
from .nsf import NSF  # noqa: F401
from .planar_flow import PlanarFlow  # noqa: F401
from .radial_flow import RadialFlow  # noqa: F401
from .realnvp import RealNVP  # noqa: F401
