"""Data sets read from user files: IDX/MNIST, CIFAR-10 pickles, image folders; their errors."""
import gzip
import pickle

import numpy as np
import pytest

from gmcore.data import CIFAR10, MNIST, ImageFolder, get_dataset, load_cifar_batch, read_idx, \
    safe_load, write_idx

# ---- IDX / MNIST ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype == np.uint8:
        a = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    p = tmp_path / f"a-idx3{suffix}"
    write_idx(p, a)
    b = read_idx(p)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_idx_header_is_big_endian(tmp_path):
    write_idx(tmp_path / "x", np.array([1, 258], dtype=np.int16))
    assert (tmp_path / "x").read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])


def _write_mnist(root, n_train=7, n_test=3, gz=True, hw=(28, 28)):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, *hw), dtype=np.uint8))
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", rng.integers(0, 10, n).astype(np.uint8))


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_from_idx_files(tmp_path, gz):
    _write_mnist(tmp_path, gz=gz)
    tr, te = MNIST(tmp_path, "train"), get_dataset("mnist", split="test", root=str(tmp_path))
    assert (len(tr), len(te), tr.shape, tr.num_levels) == (7, 3, (1, 28, 28), 256)
    x, y = tr[2]
    raw = read_idx(tmp_path / f"train-images-idx3-ubyte{'.gz' if gz else ''}")
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x[0] * 255, raw[2], atol=1e-4)
    assert tr.arrays[0].dtype == np.uint8          # compact in memory
    assert MNIST(tmp_path, binarize=True).num_levels == 2


def test_idx_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST folder not found"):
        MNIST(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        MNIST(tmp_path)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        read_idx(tmp_path / "missing")
    good = tmp_path / "good"
    write_idx(good, np.zeros((4, 5, 6), np.uint8))
    blob = good.read_bytes()
    (tmp_path / "magic").write_bytes(b"\x08\x03\x00\x00" + blob[4:])
    with pytest.raises(ValueError, match=r"magic.*bad magic number 0x08030000"):
        read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07\x03" + blob[4:])
    with pytest.raises(ValueError, match="bad magic number"):
        read_idx(tmp_path / "code")
    (tmp_path / "trunc").write_bytes(blob[:-10])
    with pytest.raises(ValueError, match=r"trunc.*truncated IDX data.*\(4, 5, 6\) need 120 bytes, file holds 110"):
        read_idx(tmp_path / "trunc")
    (tmp_path / "head").write_bytes(blob[:9])
    with pytest.raises(ValueError, match="truncated IDX header"):
        read_idx(tmp_path / "head")
    (tmp_path / "long").write_bytes(blob + b"xx")
    with pytest.raises(ValueError, match="2 unexpected bytes"):
        read_idx(tmp_path / "long")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(blob)[:-12])
    with pytest.raises(ValueError, match=r"bad\.gz.*corrupt gzip"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "notgz.gz").write_bytes(blob)
    with pytest.raises(ValueError, match=r"notgz\.gz.*corrupt gzip"):
        read_idx(tmp_path / "notgz.gz")


def test_mnist_wrong_dims_and_counts(tmp_path):
    _write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((7, 784), np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*\(N, H, W\).*\(7, 784\)"):
        MNIST(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((6, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="has 7 labels but .* has 6 images"):
        MNIST(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((3, 1), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-labels.*\(N,\)"):
        MNIST(tmp_path, "test")


# ---- CIFAR-10 and the restricted unpickler ---------------------------------------------------

def _write_cifar(root, n=4):
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"filenames": [b"a.png"] * n}
        with open(root / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    return batches


def test_cifar_round_trip(tmp_path):
    batches = _write_cifar(tmp_path)
    tr, te = CIFAR10(tmp_path, "train"), get_dataset("cifar10", split="test", root=tmp_path)
    assert (len(tr), len(te), tr.shape, tr.num_levels, tr.num_classes) == (20, 4, (3, 32, 32), 256, 10)
    x, y = te[1]
    d = batches["test_batch"]
    np.testing.assert_allclose(x * 255, d[b"data"][1].reshape(3, 32, 32), atol=1e-4)
    assert int(y) == d[b"labels"][1]
    np.testing.assert_array_equal(tr.labels[4:8], batches["data_batch_2"][b"labels"])
    # the red channel is the first 1024 values of a row
    np.testing.assert_array_equal(CIFAR10(tmp_path, "test", scale=False)[0][0][0].ravel(),
                                  d[b"data"][0, :1024])


def test_cifar_str_keys_and_nested_folder(tmp_path):
    sub = tmp_path / "cifar-10-batches-py"
    sub.mkdir()
    _write_cifar(sub)
    with open(sub / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": np.array([1, 2])}, f, protocol=4)
    assert CIFAR10(tmp_path, "test").labels.tolist() == [1, 2]


class _Boom:
    """Unpickling this calls os.system: a file that would run code."""

    def __reduce__(self):
        import os
        return (os.system, ("touch BOOM_MARKER",))


def test_malicious_pickle_is_rejected_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Boom(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"test_batch.*global '(posix|os|nt)\.system'"):
        CIFAR10(tmp_path, "test")
    assert not (tmp_path / "BOOM_MARKER").exists()
    # the same with the protocol-5 STACK_GLOBAL opcode and a builtins callable
    blob = pickle.dumps({"x": eval}, protocol=5)
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_load(blob, "evil.pkl")


def test_cifar_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CIFAR-10 folder not found"):
        CIFAR10(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        CIFAR10(tmp_path)
    _write_cifar(tmp_path)
    p = tmp_path / "test_batch"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(pickle.UnpicklingError, match="test_batch.*malformed pickle"):
        CIFAR10(tmp_path, "test")
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch.*\(N, 3072\).*\(2, 100\)"):
        load_cifar_batch(p)
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, f, protocol=2)
    with pytest.raises(ValueError, match="'labels' must be 2 integers"):
        load_cifar_batch(p)
    with open(p, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match="missing key 'labels'"):
        load_cifar_batch(p)
    with open(p, "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    with pytest.raises(ValueError, match="expected a dict"):
        load_cifar_batch(p)


# ---- image folders ----------------------------------------------------------------------------

def _png(path, array):
    from PIL import Image
    Image.fromarray(array).save(path)


def test_image_folder_classes_grey_and_rgb(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(2)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
    grey = [rng.integers(0, 256, (6, 5), dtype=np.uint8) for _ in range(3)]
    _png(tmp_path / "cat" / "a.png", grey[0])
    _png(tmp_path / "cat" / "b.png", grey[1])
    _png(tmp_path / "dog" / "c.png", grey[2])
    ds = ImageFolder(tmp_path)
    assert (len(ds), ds.shape, ds.classes, ds.mode, ds.num_levels) == (3, (1, 6, 5), ["cat", "dog"], "L", 256)
    assert ds.labels.tolist() == [0, 0, 1]
    x, _ = ds[2]
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[0] * 255, grey[2], atol=1e-4)
    # one RGB image makes the whole set RGB, grey images are replicated into 3 channels
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    _png(tmp_path / "dog" / "d.png", rgb)
    ds = ImageFolder(tmp_path, scale=False)
    assert ds.shape == (3, 6, 5) and ds.mode == "RGB"
    np.testing.assert_array_equal(ds[3][0], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(ds[0][0], np.repeat(grey[0][None], 3, 0))
    assert ImageFolder(tmp_path, mode="L").shape == (1, 6, 5)


def test_image_folder_flat_resize_and_jpeg(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    _png(tmp_path / "a.png", np.zeros((10, 12, 3), np.uint8))
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(tmp_path / "b.JPG", quality=95)
    with pytest.raises(ValueError, match=r"b\.JPG.*size.*pass size="):
        ImageFolder(tmp_path)
    ds = ImageFolder(tmp_path, size=8)
    assert len(ds) == 2 and ds.shape == (3, 8, 8) and ds.labels.tolist() == [0, 0]
    assert abs(float(ds[1][0].mean()) - 200 / 255) < 0.02


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        ImageFolder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no images"):
        ImageFolder(tmp_path)
    _png(tmp_path / "ok.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "fake.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"fake\.png: not a readable image"):
        ImageFolder(tmp_path)
    (tmp_path / "fake.png").unlink()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not an image file"):
        ImageFolder(tmp_path)
    assert len(ImageFolder(tmp_path, ignore_other_files=True)) == 1
    with pytest.raises(ValueError, match="mode"):
        ImageFolder(tmp_path, mode="CMYK")
