"""gmcore.io: safetensors weights + JSON sidecar, atomic writes, clear errors, no pickle."""
import hashlib
import json
import os
import signal

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


def _save_pair_v1(path, state):
    """A checkpoint in the first format, as gmcore wrote it before the single file: weights +
    a JSON sidecar holding the tree and the weights file's SHA-256."""
    arrays = {}
    tree = io._split(dict(state), "", arrays)
    blob = io._serialize(arrays, {"format": "gmcore-checkpoint-1"})
    (path.parent / (path.name + ".safetensors")).write_bytes(blob)
    (path.parent / (path.name + ".json")).write_text(json.dumps({
        "format": "gmcore-checkpoint-1", "weights": path.name + ".safetensors",
        "weights_sha256": hashlib.sha256(blob).hexdigest(), "state": tree}))


def test_checkpoint_is_one_file_and_json_is_only_a_copy(tmp_path):
    io.save_checkpoint(tmp_path / "last", _state())
    meta, _ = io._read_file(tmp_path / "last.safetensors")
    assert meta["format"] == io.FORMAT and json.loads(meta["state"])["step"] == 12
    copy = json.loads((tmp_path / "last.json").read_text())
    assert copy["state"]["step"] == 12 and copy["tensors_sha256"] == meta["tensors_sha256"]
    # Loading never reads the copy: a stale one (a kill before it was replaced) or none at all
    (tmp_path / "last.json").write_text(json.dumps({"format": io.FORMAT, "state": {"step": 3}}))
    assert io.load_checkpoint(tmp_path / "last")["step"] == 12
    (tmp_path / "last.json").unlink()
    assert io.load_checkpoint(tmp_path / "last.json")["step"] == 12


def test_checkpoint_detects_edited_tensor_data(tmp_path):
    st = _state()
    st["model"]["w"] = gm.full((2, 3), 1.0)
    io.save_checkpoint(tmp_path / "last", st)
    f = tmp_path / "last.safetensors"
    data = bytearray(f.read_bytes())
    one = np.float32(1.0).tobytes()
    i = bytes(data).rindex(one)
    data[i:i + 4] = np.float32(2.0).tobytes()       # same size, same header: only the SHA sees it
    f.write_bytes(bytes(data))
    with pytest.raises(io.CheckpointError, match=r"last\.safetensors.*SHA-256"):
        io.load_checkpoint(tmp_path / "last")


def test_old_pair_format_still_loads_and_detects_a_mismatched_pair(tmp_path):
    saved = _state()
    _save_pair_v1(tmp_path / "a", saved)
    back = io.load_checkpoint(tmp_path / "a")
    assert back["step"] == 12 and list(back["optimizer"]["state"]) == [0]
    np.testing.assert_array_equal(back["model"]["w"].numpy(), saved["model"]["w"].numpy())
    st = _state()
    st["model"]["w"] = gm.ones(2, 3)
    _save_pair_v1(tmp_path / "b", st)
    # What a kill between that format's two renames left: new weights, old sidecar.
    os.replace(tmp_path / "b.safetensors", tmp_path / "a.safetensors")
    with pytest.raises(io.CheckpointError, match="SHA-256"):
        io.load_checkpoint(tmp_path / "a")


def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    io.save_checkpoint(tmp_path / "last", _state())
    f = tmp_path / "last.safetensors"
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(io.CheckpointError, match="last.safetensors"):
        io.load_checkpoint(tmp_path / "last")


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


@pytest.fixture
def default_sigint():
    """Python's default SIGINT handler, also where the runner was started with SIGINT ignored."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_deferred_signals_hold_sigint_until_the_block_ends(default_sigint):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with io.deferred_signals():
            signal.raise_signal(signal.SIGINT)
            done.append("after the signal")     # still running: the signal waits
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("point", ["weights-created", "weights-fsynced", "weights-renamed", "json-written"])
def test_ctrl_c_inside_a_save_lets_it_finish(tmp_path, monkeypatch, point, default_sigint):
    io.save_checkpoint(tmp_path / "last", {"step": 1, "w": gm.zeros(3)})
    monkeypatch.setenv("GMCORE_FAULT_INJECT", f"save:{point}:SIGINT")
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint(tmp_path / "last", {"step": 2, "w": gm.ones(3)})
    back = io.load_checkpoint(tmp_path / "last")
    assert back["step"] == 2 and back["w"].numpy().tolist() == [1, 1, 1]
    assert json.loads((tmp_path / "last.json").read_text())["state"]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_fault_injection_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("GMCORE_FAULT_INJECT", "save:weights-renamd")
    with pytest.raises(ValueError, match="unknown save point 'weights-renamd'"):
        io.save_checkpoint(tmp_path / "last", {"step": 1})


def test_remove_temp_files_takes_only_atomic_write_leftovers(tmp_path):
    for name in (".last.safetensors.k2j_x9a1.tmp", ".config.json.abc.tmp", "notes.tmp", "last.json"):
        (tmp_path / name).write_text("x")
    removed = io.remove_temp_files(tmp_path)
    assert sorted(p.name for p in removed) == [".config.json.abc.tmp", ".last.safetensors.k2j_x9a1.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "notes.tmp"]
