"""Every Triton kernel lowers to sm_90 (Hopper) code, checked without a GPU.

The CPU interpreter the other kernel tests use never runs Triton's compiler, so a kernel could
pass them and still fail to compile for the GPU. Each ``kernels/triton/<family>.py`` lists its
kernels in ``SM90_KERNELS`` as ``(kernel, signature, constexprs)`` tuples; this test compiles
them all in a subprocess (the interpreter switch of this process would replace the compiler).
"""
import importlib.util
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton not installed")

import gmcore.kernels.triton as triton_pkg  # noqa: E402

FAMILIES = sorted(p.stem for p in pathlib.Path(triton_pkg.__file__).parent.glob("*.py")
                  if not p.stem.startswith("_"))

SCRIPT = """
import sys
import importlib
from gmcore.kernels._launch import compile_for_sm90
mod = importlib.import_module("gmcore.kernels.triton." + sys.argv[1])
kernels = mod.SM90_KERNELS
assert kernels, "SM90_KERNELS is empty"
for kernel, signature, constexprs in kernels:
    compiled = compile_for_sm90(kernel, signature, constexprs)
    assert compiled.asm.get("cubin"), kernel
    print(getattr(kernel, "__name__", kernel), "ok")
"""


@pytest.mark.skipif(not FAMILIES, reason="no Triton kernel files yet")
@pytest.mark.parametrize("family", FAMILIES or ["none"])
def test_family_compiles_for_sm90(family):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, family], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"{family}: sm_90 compile failed\n{proc.stdout}\n{proc.stderr[-4000:]}"


def test_spec_is_importable():
    assert importlib.util.find_spec("gmcore.kernels._launch") is not None
