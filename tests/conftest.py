import os

import pytest
from hypothesis import HealthCheck, settings

import gmcore as gm
from gmcore import dispatch

# Without a GPU, Triton kernels run in Triton's CPU interpreter; the switch must be set before
# triton is first imported (kernels/_launch.py explains the NumPy adapter).
if not gm.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset

# CI has 2 cores and a 20-minute budget: keep property tests small but meaningful.
settings.register_profile("ci", max_examples=15, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("GMCORE_HYPOTHESIS_PROFILE", "ci"))


def _devices():
    return ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
        not gm.cuda.is_available(), reason="no CUDA device (cupy + GPU) available"))]


@pytest.fixture(params=_devices())
def device(request):
    """Every device test runs on cpu, and on cuda where a GPU is visible."""
    return request.param


@pytest.fixture
def kernels_env(monkeypatch):
    """``kernels_env("dlml=numba")`` sets GMCORE_KERNELS for one test (None unsets it); the
    dispatch cache is reset on each change and again afterwards."""
    def use(value):
        if value is None:
            monkeypatch.delenv("GMCORE_KERNELS", raising=False)
        else:
            monkeypatch.setenv("GMCORE_KERNELS", value)
        dispatch.reset()
    yield use
    monkeypatch.delenv("GMCORE_KERNELS", raising=False)
    dispatch.reset()
