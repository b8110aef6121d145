"""gmcore selftest: passes on a sound installation, names a broken implementation, refuses a
missing GPU. (The CUDA path, Triton and cuda rows, runs only on a GPU machine.)"""
import json

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, dispatch, selftest


@pytest.fixture
def restore_dispatch():
    yield
    dispatch.reset()


def test_cpu_selftest_passes_and_writes_reports(tmp_path, capsys):
    rc = cli.main(["selftest", "--device", "cpu", "--quick", "--out", str(tmp_path / "st")])
    out = capsys.readouterr().out
    assert rc == 0, out
    doc = json.loads((tmp_path / "st" / "selftest.json").read_text())
    assert doc["summary"]["result"] == "PASS" and doc["summary"]["failed"] == 0
    assert doc["machine"]["numpy"] == np.__version__
    kernel_rows = [r for r in doc["rows"] if r["kind"] == "kernel"]
    # every registered family is checked, every check ran its reference path at least
    assert {r["family"] for r in kernel_rows} == set(dispatch.families())
    assert all(r["status"] == "pass" for r in kernel_rows if r["impl"] == "reference")
    assert {r["op"] for r in doc["rows"] if r["kind"] == "model"} == {"vae", "pixelcnn", "made", "wavenet"}
    md = (tmp_path / "st" / "selftest.md").read_text()
    assert md.startswith("# gmcore selftest") and "**PASS**" in md
    assert "PASS:" in out and "selftest.json" in out


def test_broken_implementation_fails_with_its_row_named(monkeypatch, capsys, restore_dispatch):
    entry = next(e for e in dispatch._entries[("dlml", "forward", "cpu")] if e.name == "numba")
    real = entry.loader()

    def off_by_a_little(x, p, num_bins, want_grad):
        nll, grad = real(x, p, num_bins, want_grad)
        return nll + nll.dtype.type(1e-2), grad  # a wrong value, gradients untouched

    monkeypatch.setattr(entry, "loader", lambda: off_by_a_little)
    rows = selftest.run("cpu", families={"dlml"}, models=False, quiet=True, quick=True)["rows"]
    failed = [r for r in rows if r.status == "FAIL"]
    assert [(r.family, r.impl) for r in failed] == [("dlml", "numba")]
    assert "out0" in failed[0].detail and failed[0].max_err >= 0.99e-2
    # the command exits 1 and prints the failing row
    rc = cli.main(["selftest", "--device", "cpu", "--quick"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "FAILED dlml/nll/numba/cpu/float32" in out


def test_compare_catches_nonfinite_and_shapes():
    from gmcore.selftest.checks import compare

    ref = np.array([1.0, np.inf, 3.0])
    assert compare(ref.copy(), ref, 1e-5)[3] is None
    assert compare(np.array([1.0, 5.0, 3.0]), ref, 1e-5)[3] is not None  # inf lost
    assert compare(np.array([1.0, np.inf, 3.1]), ref, 1e-5)[3] == "exceeds tolerance"
    assert "shape" in compare(np.zeros(2), ref, 1e-5)[3]
    assert compare(None, ref, 1e-5)[3] == "no gradient"


@pytest.mark.skipif(gm.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_gpu_is_one_clear_line(capsys):
    assert cli.main(["selftest", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0]
