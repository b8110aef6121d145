"""gmcore: a compact autodiff tensor engine for generative models, on NumPy (cpu) and CuPy (cuda).

>>> import gmcore as gm
>>> x = gm.randn(4, 3, requires_grad=True)
>>> loss = (x.tanh() ** 2).mean()
>>> loss.backward()
>>> x.grad.shape
gmcore.Size([4, 3])

Importing gmcore imports NumPy and gmcore's own Python only: cupy, triton, numba, torch and the
compiled ``gmcore._C`` are probed on first use.
"""
import os as _os

# gmcore's compiled CPU kernels run OpenMP regions between NumPy's OpenBLAS calls, and the two
# thread pools share the cores. OpenMP workers that keep spinning after a region slow down the
# GEMM that follows (vae --arch conv on 2 cores: 25 steps/s, 51 with passive waiting; the big
# kernels lose nothing). libgomp reads this when gmcore._C loads it; a value the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Reuse freed activation buffers instead of page-faulting fresh mmaps every step (gmcore/_malloc.py;
# GMCORE_MALLOC_TUNING=0 turns it off).
from . import _malloc
_malloc.tune()
from ._dtype import (dtype, float16, half, float32, float, float64, double, uint8, int8, int16,
                     short, int32, int, int64, long, bool, get_default_dtype, set_default_dtype,
                     result_type as _result_type)
from .backend import device, cuda_is_available
from .tensor import Tensor, Size
from .autograd import no_grad, enable_grad, set_grad_enabled, is_grad_enabled
from ._inference_mode import inference_mode, is_inference_mode_enabled
from .threads import set_num_threads, get_num_threads
from . import autograd
from .random import Generator, manual_seed, seed, initial_seed, default_generator
from .creation import *  # noqa: F401,F403
from .functional import *  # noqa: F401,F403
from . import functional
from . import nn
from . import optim, distributions
from . import io
from . import data
from . import progress
from . import divergences
from . import score
from .io import save, load

__version__ = "0.1.0"


def result_type(*operands):
    """The dtype PyTorch's promotion gives for tensors and Python scalars."""
    return _result_type(*[t.data if isinstance(t, Tensor) else t for t in operands])


def is_tensor(obj):
    return isinstance(obj, Tensor)


class cuda:
    """``gmcore.cuda.is_available()`` and ``device_count()``, as ``torch.cuda``."""

    is_available = staticmethod(cuda_is_available)

    @staticmethod
    def device_count():
        from .backend import cuda_device_count
        return cuda_device_count()
