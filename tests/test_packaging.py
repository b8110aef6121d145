"""Packaging: lazy imports, the CLI, the compiled module on a GPU-less machine, kernels shipped."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _run(*args, **kw):
    env = dict(os.environ)
    env.pop("GMCORE_KERNELS", None)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          env=env, **kw)


def test_import_gmcore_is_lazy():
    code = ("import sys, gmcore\n"
            "heavy = ['cupy', 'triton', 'numba', 'torch', 'gmcore._C']\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"imported at `import gmcore`: {r.stdout.strip()}"


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_openmp_waits_passively_unless_the_user_chose(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GMCORE_KERNELS")}
    if user_value is not None:
        env["OMP_WAIT_POLICY"] = user_value
    r = subprocess.run([sys.executable, "-c", "import os, gmcore; print(os.environ['OMP_WAIT_POLICY'])"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == expected


def test_info_prints_sections():
    r = _run("-m", "gmcore", "info")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for needle in ("gmcore", "python", "numpy", "optional parts:", "_C", "cupy", "triton",
                   "numba", "torch", "devices:", "cpu"):
        assert needle in out, f"{needle!r} missing from `gmcore info`:\n{out}"


def test_kernels_prints_table():
    r = _run("-m", "gmcore", "kernels")
    assert r.returncode == 0, r.stderr
    assert "logsumexp" in r.stdout and "reference" in r.stdout


def test_console_script_installed():
    exe = shutil.which("gmcore", path=str(Path(sys.executable).parent)) or shutil.which("gmcore")
    if exe is None:
        pytest.skip("gmcore console script not on PATH (package not installed with pip)")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "info" in r.stdout


def test_no_command_prints_help():
    r = _run("-m", "gmcore")
    assert r.returncode == 2 and "info" in r.stdout


def test_kernels_ship_as_gmcore_kernels():
    import gmcore.kernels
    import gmcore.kernels.numba
    import gmcore.kernels.triton  # noqa: F401  (the folder, not the triton package)

    assert importlib.util.find_spec("gmcore.kernels.triton") is not None


def test_compiled_module_on_this_machine():
    from gmcore import _C

    assert isinstance(_C.has_cuda, bool)
    n = _C.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    if not _C.has_cuda:
        assert n == 0
        return
    if n == 0:
        # built with CUDA, no GPU: a CUDA call is a clean RuntimeError naming the CUDA error
        with pytest.raises(RuntimeError, match="cuda"):
            _C.logsumexp_rows_cuda(0, 0, 4, 4, "float32", 0)
        with pytest.raises(ValueError, match="float32"):
            _C.logsumexp_rows_cuda(0, 0, 4, 4, "int8", 0)
