"""Triton launches on CuPy's current stream (kernels/_launch.use_cupy_stream).

No GPU here: a fake ``cupy`` and a fake Triton driver check that the override is installed and
answers CuPy's current device and stream handle; the Triton source check pins the hook this
relies on (``JITFunction.run`` asks ``driver.active.get_current_stream(device)``). That a real
launch then orders with CuPy's work can only be checked on a GPU (gmcore selftest --device cuda).
"""
import inspect
import sys
import types

import pytest

from gmcore.kernels import _launch


class _FakeCupy:
    """``cupy.cuda``'s current device and per-device current stream, nothing else."""

    def __init__(self):
        self.device = 0
        self.streams = {0: 0, 1: 0}  # 0 is the legacy default stream's handle
        cuda = types.SimpleNamespace()
        cuda.runtime = types.SimpleNamespace(getDevice=lambda: self.device)
        cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=self.streams[self.device])
        fake = self

        class Device:
            def __init__(self, i):
                self.i = i

            def __enter__(self):
                self.prev, fake.device = fake.device, self.i

            def __exit__(self, *exc):
                fake.device = self.prev

        cuda.Device = Device
        self.module = types.SimpleNamespace(cuda=cuda)


class _FakeArray:
    flags = types.SimpleNamespace(c_contiguous=True)
    dtype = types.SimpleNamespace(name="float32")
    data = types.SimpleNamespace(ptr=1234)


@pytest.fixture
def fake_cupy(monkeypatch):
    fake = _FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake.module)
    monkeypatch.setattr(_launch, "_hooked_driver", None)
    return fake


def _driver():
    torch_stream = 777  # what Triton would use without the fix: torch's (or the default) stream
    return types.SimpleNamespace(get_current_stream=lambda device: torch_stream,
                                 get_current_device=lambda: 5)


def test_override_returns_cupy_current_stream(fake_cupy):
    drv = _driver()
    _launch.use_cupy_stream(drv)
    assert drv.get_current_device() == 0
    assert drv.get_current_stream(0) == 0
    fake_cupy.streams[0] = 0xBEEF  # `with cupy.cuda.Stream():` makes another stream current
    assert drv.get_current_stream(drv.get_current_device()) == 0xBEEF
    fake_cupy.streams[1] = 0xCAFE  # another device: its own current stream, device restored
    assert drv.get_current_stream(1) == 0xCAFE and fake_cupy.device == 0
    fake_cupy.device = 1
    assert drv.get_current_device() == 1


def test_tl_arg_installs_the_override_once(fake_cupy, monkeypatch):
    triton_runtime = pytest.importorskip("triton.runtime")
    drv = _driver()
    monkeypatch.setattr(triton_runtime.driver, "_active", drv)  # DriverConfig.active returns it
    ptr = _launch.tl_arg(_FakeArray())
    assert ptr.data_ptr() == 1234
    fake_cupy.streams[0] = 42
    assert drv.get_current_stream(0) == 42
    installed = drv.get_current_stream
    _launch.tl_arg(_FakeArray())
    assert drv.get_current_stream is installed  # not reinstalled on every launch


def test_triton_reads_the_stream_from_the_active_driver():
    jit = pytest.importorskip("triton.runtime.jit")
    src = inspect.getsource(jit.JITFunction.run)
    assert "driver.active.get_current_device()" in src
    assert "driver.active.get_current_stream(device)" in src
