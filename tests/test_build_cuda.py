"""The CUDA sources compile for Hopper (sm_90) with nvcc; skipped where nvcc is absent."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[1] / "csrc"


def _nvcc():
    return shutil.which("nvcc") or next(
        (p for p in ("/usr/local/cuda/bin/nvcc",) if os.access(p, os.X_OK)), None)


@pytest.mark.parametrize("source", sorted(p.name for p in CSRC.glob("*.cu")) or ["<none>"])
def test_cuda_source_compiles_for_sm90(source, tmp_path):
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    if source == "<none>":
        pytest.skip("no .cu sources")
    cmd = [nvcc, "-arch=sm_90", "-std=c++17", "-O2", "-I", str(CSRC), "-DGMCORE_WITH_CUDA=1",
           "-c", str(CSRC / source), "-o", str(tmp_path / (source + ".o"))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout}\n{r.stderr}"
    assert (tmp_path / (source + ".o")).stat().st_size > 0
    assert "warning" not in r.stderr.lower(), r.stderr
