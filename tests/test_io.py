"""gmcore.io: safetensors weights + JSON sidecar, atomic writes, clear errors, no pickle."""
import json
import os

import numpy as np
import pytest

import gmcore as gm
from gmcore import io

pytest.importorskip("safetensors")


def test_save_load_roundtrip_dtypes(tmp_path):
    sd = {"f32": gm.randn(3, 4), "f64": gm.randn(2, dtype=gm.float64), "i64": gm.arange(5),
          "u8": gm.tensor(np.arange(4, dtype=np.uint8)), "scalar": gm.tensor(2.5)}
    gm.save(sd, tmp_path / "w.safetensors")
    back = gm.load(tmp_path / "w.safetensors")
    assert set(back) == set(sd)
    for k in sd:
        assert back[k].dtype == sd[k].dtype
        np.testing.assert_array_equal(back[k].numpy(), sd[k].numpy())


def test_save_rejects_non_mapping_and_bad_values(tmp_path):
    with pytest.raises(TypeError, match="mapping"):
        gm.save([gm.ones(2)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="'w'"):
        gm.save({"w": "not a tensor"}, tmp_path / "x.safetensors")


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        gm.load(tmp_path / "nope.safetensors")
    bad = tmp_path / "short.safetensors"
    bad.write_bytes(b"abc")
    with pytest.raises(io.CheckpointError, match="short.safetensors"):
        gm.load(bad)
    trunc = tmp_path / "trunc.safetensors"
    gm.save({"w": gm.ones(100)}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:50])
    with pytest.raises(io.CheckpointError, match="trunc.safetensors"):
        gm.load(trunc)


def _state():
    return {"model": {"w": gm.randn(2, 3), "b": gm.zeros(3)},
            "optimizer": {"state": {0: {"step": 4, "exp_avg": gm.ones(2, 3)}},
                          "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1]}]},
            "rng": {"seed": 7, "words": [1, 2, 3]}, "step": 12, "ema": None,
            "array": np.arange(3.0), "inf": float("inf")}


def test_checkpoint_roundtrip_preserves_structure(tmp_path):
    st = _state()
    wpath, jpath = io.save_checkpoint(tmp_path / "last", st)
    assert wpath.name == "last.safetensors" and jpath.name == "last.json"
    back = io.load_checkpoint(tmp_path / "last")
    assert back["step"] == 12 and back["ema"] is None and back["inf"] == float("inf")
    assert list(back["optimizer"]["state"]) == [0]                 # int keys survive
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)   # tuples survive
    np.testing.assert_array_equal(back["model"]["w"].numpy(), st["model"]["w"].numpy())
    assert isinstance(back["array"], np.ndarray)
    # Any of the three spellings of the path works.
    assert io.load_checkpoint(jpath)["step"] == 12
    assert io.load_checkpoint(wpath)["step"] == 12


def test_checkpoint_detects_mismatched_pair(tmp_path):
    io.save_checkpoint(tmp_path / "a", _state())
    st = _state()
    st["model"]["w"] = gm.ones(2, 3)
    io.save_checkpoint(tmp_path / "b", st)
    # Simulate a crash between the two renames: new weights, old sidecar.
    os.replace(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    with pytest.raises(io.CheckpointError, match="SHA-256"):
        io.load_checkpoint(tmp_path / "a")


def test_checkpoint_rejects_foreign_json_and_unsupported_objects(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(io.CheckpointError, match="not a gmcore checkpoint"):
        io.load_checkpoint(tmp_path / "x")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(io.CheckpointError, match="not valid JSON"):
        io.load_checkpoint(tmp_path / "y")
    with pytest.raises(TypeError, match="no pickle"):
        io.save_checkpoint(tmp_path / "z", {"f": object()})
    with pytest.raises(FileNotFoundError, match="missing.json"):
        io.load_checkpoint(tmp_path / "missing")


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    io.atomic_write_bytes(target, b"old")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_bytes(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]      # no temporary left behind


def test_module_state_dict_through_save_load(tmp_path):
    net = gm.nn.Sequential(gm.nn.Linear(3, 4), gm.nn.Linear(4, 2))
    gm.save(net.state_dict(), tmp_path / "net.safetensors")
    other = gm.nn.Sequential(gm.nn.Linear(3, 4), gm.nn.Linear(4, 2))
    other.load_state_dict(gm.load(tmp_path / "net.safetensors"))
    x = gm.randn(5, 3)
    np.testing.assert_array_equal(net(x).detach().numpy(), other(x).detach().numpy())


def test_zero_dim_and_noncontiguous_tensors_keep_their_shape(tmp_path):
    sd = {"count": gm.tensor(3), "t": gm.randn(3, 4).t()}
    gm.save(sd, tmp_path / "z.safetensors")
    back = gm.load(tmp_path / "z.safetensors")
    assert back["count"].shape == () and back["count"].item() == 3
    np.testing.assert_array_equal(back["t"].numpy(), sd["t"].numpy())
