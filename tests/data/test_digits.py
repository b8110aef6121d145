"""The embedded digits: file, licence, split, value ranges, options; and the registry."""
import gzip
import hashlib
import importlib.resources
import subprocess
import sys

import numpy as np
import pytest

import gmcore.data as gd
from gmcore.data import DATASETS, DataLoader, Digits, get_dataset

_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"


def test_file_and_licence_ship_with_the_package():
    root = importlib.resources.files("gmcore.data")
    blob = root.joinpath("digits.csv.gz").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == _SHA256
    assert len(gzip.decompress(blob).splitlines()) == 1797
    licence = root.joinpath("DIGITS_LICENSE.txt").read_text()
    for fact in ("CC BY 4.0", "https://archive.ics.uci.edu/dataset/80", "Alpaydin", "Kaynak",
                 "BSD 3-Clause", "scikit-learn"):
        assert fact in licence


def test_split_sizes_disjoint_and_stable():
    xtr, ytr = gd.load_digits_arrays("train")
    xte, yte = gd.load_digits_arrays("test")
    assert (len(xtr), len(xte)) == (gd.DIGITS_TRAIN_SIZE, gd.DIGITS_TEST_SIZE) == (1500, 297)
    # the split is the PCG64(seed=0) permutation: recompute it and compare the contents
    rows = np.loadtxt(gzip.open(importlib.resources.files("gmcore.data").joinpath(
        "digits.csv.gz").open("rb"), "rt"), delimiter=",", dtype=np.int64)
    perm = np.random.Generator(np.random.PCG64(0)).permutation(1797)
    np.testing.assert_array_equal(xtr.reshape(1500, 64), rows[np.sort(perm[:1500]), :64])
    np.testing.assert_array_equal(yte, rows[np.sort(perm[1500:]), 64])
    tr_idx, te_idx = gd.digits._split_indices()
    assert not set(tr_idx.tolist()) & set(te_idx.tolist())
    # together the whole file
    together = np.concatenate([xtr.reshape(-1, 64), xte.reshape(-1, 64)])
    assert len(together) == 1797
    # a few known facts of this file: first row is a 0, class counts
    assert rows[0, 64] == 0 and np.bincount(rows[:, 64]).tolist()[:3] == [178, 182, 177]
    # every class is in both splits
    assert set(ytr.tolist()) == set(yte.tolist()) == set(range(10))


def test_scaled_images_and_raw_levels():
    ds = Digits("train")
    assert (ds.name, ds.shape, ds.num_levels, ds.bins, len(ds)) == ("digits", (1, 8, 8), 17, 17, 1500)
    x = ds.images
    assert x.dtype == np.float32 and x.shape == (1500, 1, 8, 8)
    assert x.min() == 0.0 and x.max() == 1.0
    raw = Digits("train", scale=False)
    r, y = raw[5]
    assert r.dtype == np.uint8 and r.max() <= 16 and isinstance(int(y), int)
    np.testing.assert_allclose(x * 16, raw.images.astype(np.float32), atol=1e-5)
    levels = np.unique(x * 16)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-5)     # exactly k / 16


def test_binarize_threshold_and_stochastic():
    raw = Digits("test", scale=False).images
    t = Digits("test", binarize="threshold")
    assert t.num_levels == 2 and set(np.unique(t.images).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(t.images, (raw > 8).astype(np.float32))
    s1, s2 = Digits("test", binarize="stochastic", seed=1), Digits("test", binarize="stochastic", seed=1)
    np.testing.assert_array_equal(s1.images, s2.images)
    assert not np.array_equal(s1.images, Digits("test", binarize="stochastic", seed=2).images)
    assert np.all(s1.images[raw == 0] == 0) and np.all(s1.images[raw == 16] == 1)
    # the mean of the Bernoulli draws follows the intensities
    assert abs(s1.images.mean() - raw.mean() / 16) < 0.01
    with pytest.raises(ValueError, match="binarize"):
        Digits("train", binarize="sometimes")


def test_loader_over_digits():
    loader = DataLoader(Digits("train"), batch_size=128, shuffle=True, generator=0, drop_last=True)
    x, y = next(iter(loader))
    assert x.shape == (128, 1, 8, 8) and str(x.dtype) == "gmcore.float32"
    assert y.shape == (128,) and str(y.dtype) == "gmcore.int64" and len(loader) == 11


def test_registry():
    assert {"digits", "mnist", "cifar10", "image_folder", "moons", "circles", "swiss_roll",
            "8gaussians", "checkerboard", "text", "audio"} <= set(DATASETS)
    for name, info in DATASETS.items():
        assert info.name == name and info.description and isinstance(info.defaults, dict)
    ds = get_dataset("digits", split="test", binarize="threshold")
    assert len(ds) == 297 and ds.num_levels == 2
    assert get_dataset("circles", split="test", n=50).points.shape == (50, 2)
    with pytest.raises(ValueError, match="unknown dataset 'digitz'.*digits"):
        get_dataset("digitz")
    with pytest.raises(ValueError, match="split"):
        get_dataset("digits", split="val")
    with pytest.raises(ValueError, match="root="):
        get_dataset("mnist")
    with pytest.raises(TypeError, match="unknown option.*'colour'"):
        get_dataset("digits", colour=True)


def test_import_is_light():
    code = ("import sys, gmcore, gmcore.data\n"
            "bad = [m for m in ('PIL', 'torch', 'sklearn', 'cupy', 'pydoc_data') if m in sys.modules]\n"
            "print(','.join(bad))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ""
