"""Energy-based models: Boltzmann machines, restricted Boltzmann machines (CD-k, persistent CD,
annealed importance sampling for log Z) and energy networks trained with short-run Langevin
dynamics. Importing this package registers them for ``gmcore train``."""
from .rbm import RBM  # noqa: F401,E402  (registers rbm)
from .boltzmann_machine import BoltzmannMachine  # noqa: F401,E402  (registers boltzmann-machine)
from .ebm import EBM  # noqa: F401,E402  (registers ebm)
