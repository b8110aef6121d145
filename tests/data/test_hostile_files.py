"""Hostile and degenerate data files: headers that lie about sizes, pickles that ask for more
memory than they hold, giant images, out-of-range labels, empty data sets. Every one must be a
``DataError`` (a ``ValueError``) naming the file, raised before anything large is allocated.
The files stay tiny: only their headers lie."""
import codecs
import gzip
import pickle
import struct
import zlib

import numpy as np
import pytest

from gmcore.data import CIFAR10, MNIST, ArrayDataset, DataError, DataLoader, ImageFolder, \
    PickleDataError, load_cifar_batch, read_idx, safe_load, write_idx
from gmcore.data import image_folder as image_folder_mod

# ---- IDX --------------------------------------------------------------------------------------


def _idx_header(code, dims):
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_dims_whose_product_overflows_int64(tmp_path, suffix):
    # int32 x 4 x 65536^4 = 2^66 bytes: wraps to 0 in int64 (the old "cannot reshape array of
    # size 0"); Python ints give the true size
    path = tmp_path / f"evil-idx4{suffix}"
    blob = _idx_header(0x0C, (4, 65536, 65536, 65536)) + b"\x00" * 16
    path.write_bytes(gzip.compress(blob) if suffix else blob)
    need = 4 * 4 * 65536 ** 3
    with pytest.raises(DataError, match=str(path.name)) as err:
        read_idx(path)
    assert (f"need {need} bytes" if not suffix else "gzip file can hold") in str(err.value)


def test_idx_gz_sizes_checked_while_streaming(tmp_path):
    good = _idx_header(0x08, (3, 4)) + bytes(range(12))
    (tmp_path / "ok.gz").write_bytes(gzip.compress(good))
    assert read_idx(tmp_path / "ok.gz").tolist() == np.arange(12).reshape(3, 4).tolist()
    (tmp_path / "short.gz").write_bytes(gzip.compress(good[:-2]))
    with pytest.raises(DataError, match=r"short\.gz: truncated IDX data.*need 12 bytes, file holds 10"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "long.gz").write_bytes(gzip.compress(good + b"xyz"))
    with pytest.raises(DataError, match=r"long\.gz: 3 unexpected bytes"):
        read_idx(tmp_path / "long.gz")


def _write_mnist(root, images, labels):
    for prefix in ("train", "t10k"):
        write_idx(root / f"{prefix}-images-idx3-ubyte", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels)


def test_mnist_with_no_images_is_refused(tmp_path):
    _write_mnist(tmp_path, np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: the MNIST train split holds no images"):
        MNIST(tmp_path)


def test_mnist_label_out_of_range_names_file_value_and_index(tmp_path):
    labels = np.array([1, 2, 3, 200, 4, 250], np.uint8)
    _write_mnist(tmp_path, np.zeros((6, 28, 28), np.uint8), labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 200 at index 3 is outside "
                                        r"0\.\.9 \(and 1 more\)"):
        MNIST(tmp_path)


# ---- empty data sets and the loader -------------------------------------------------------------

def test_loader_refuses_a_data_set_that_gives_no_batch():
    empty = ArrayDataset(np.zeros((0, 3)), name="empty-set")
    with pytest.raises(DataError, match="'empty-set' is empty"):
        DataLoader(empty, batch_size=4, shuffle=True)
    small = ArrayDataset(np.zeros((3, 2)), name="small")
    with pytest.raises(DataError, match="'small' has 3 examples, fewer than batch_size=4"):
        DataLoader(small, batch_size=4, drop_last=True)
    assert len(DataLoader(small, batch_size=4)) == 1          # a short last batch is fine


# ---- CIFAR pickles -------------------------------------------------------------------------

_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]


class _Reduce:
    """Pickles as whatever ``__reduce__`` tuple it is given: a way to write lying pickles."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def _hostile_pickles():
    huge = (2 ** 40, 3072)
    big = b"x" * 20000          # one object, referenced 200 times through the memo
    return {
        "reconstruct": _Reduce(_RECONSTRUCT, (np.ndarray, huge, b"b")),
        "setstate": _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                            (1, huge, np.dtype(np.uint8), False, b"abc")),
        "object": _Reduce(_RECONSTRUCT, (np.ndarray, (0,), b"b"),
                          (1, (2 ** 20, 3072), np.dtype(object), False, [1, 2])),
        "bytearray": _Reduce(bytearray, (2 ** 40,)),
        "hexchain": _Reduce(codecs.encode, (b"ab", "hex")),
        "copies": [_Reduce(bytearray, (big,)) for _ in range(200)],
    }


@pytest.mark.parametrize("case", sorted(_hostile_pickles()))
def test_pickles_that_ask_for_more_than_they_hold(tmp_path, case):
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": _hostile_pickles()[case], b"labels": [0]}, f, protocol=4)
    assert path.stat().st_size < 10 ** 6
    with pytest.raises(PickleDataError, match="test_batch: ") as err:
        load_cifar_batch(path)
    assert isinstance(err.value, ValueError) and isinstance(err.value, pickle.UnpicklingError)


@pytest.mark.parametrize("blob, problem", [
    (b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 40) + b"abc.", "expected 1099511627776 bytes"),
    (b"\x80\x03B" + struct.pack("<I", 2 ** 31) + b"abc.", "expected 2147483648 bytes"),
    (b"\x80\x02Nr" + struct.pack("<I", 2 ** 32 - 1) + b".", "memo index 4294967295"),
])
def test_pickle_opcodes_with_lying_lengths(blob, problem):
    # CPython's unpickler allocates a BINBYTES8 object (and sizes its memo) before reading
    with pytest.raises(PickleDataError, match=f"evil.pkl: .*{problem}"):
        safe_load(blob, "evil.pkl")


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_safe_load_rebuilds_arrays_as_numpy_does(protocol):
    arrays = [np.arange(6, dtype=">i4").reshape(2, 3), np.arange(6, dtype="<i2"),
              np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.array(3.5, np.float32),
              np.zeros((0, 3), np.uint8), np.array([1 + 2j]), np.array([True, False])]
    obj = {"a": arrays, "t": (arrays[0], np.dtype(">f8")), b"k": [1, b"x", 2.5]}
    blob = pickle.dumps(obj, protocol=protocol)
    got, want = safe_load(blob), pickle.loads(blob)
    for g, w in zip(got["a"] + [got["t"][0]], want["a"] + [want["t"][0]]):
        assert type(g) is np.ndarray and g.dtype == w.dtype and g.shape == w.shape
        assert g.flags.f_contiguous == w.flags.f_contiguous
        np.testing.assert_array_equal(g, w)
    assert got["t"][1] == want["t"][1] and got[b"k"] == want[b"k"]


def _cifar(root, labels, data=None):
    data = np.zeros((len(labels), 3072), np.uint8) if data is None else data
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)


def test_cifar_labels_checked_and_empty_refused(tmp_path):
    _cifar(tmp_path, [0, 9, 10, 3])
    with pytest.raises(DataError, match=r"data_batch_1: label 10 at index 2 is outside 0\.\.9"):
        CIFAR10(tmp_path)
    _cifar(tmp_path, [0, -1])
    with pytest.raises(DataError, match=r"test_batch: label -1 at index 1"):
        CIFAR10(tmp_path, "test")
    # nested lists would let np.asarray build a (2,)*depth array far larger than the file
    nest = [0, 1]
    for _ in range(30):
        nest = [nest, nest]
    _cifar(tmp_path, [0, 0])
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": nest}, f, protocol=2)
    with pytest.raises(DataError, match="test_batch: 'labels' must be a list of ints .* of list"):
        CIFAR10(tmp_path, "test")
    _cifar(tmp_path, [])
    with pytest.raises(DataError, match="CIFAR-10 train batches hold no images"):
        CIFAR10(tmp_path)


# ---- images ----------------------------------------------------------------------------------

def _png_header_only(path, width, height):
    """A PNG whose header claims width x height grey pixels, with one tiny (truncated) IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, problem", [(20000, "image too large to load"),     # Pillow's bomb error
                                           (10000, "image of 10000x10000 pixels is over the limit")])
def test_giant_png_is_refused_from_its_header(tmp_path, side, problem):
    pytest.importorskip("PIL")
    _png_header_only(tmp_path / "giant.png", side, side)
    assert (tmp_path / "giant.png").stat().st_size < 200
    with pytest.raises(DataError, match=f"giant.png: {problem}"):
        ImageFolder(tmp_path)


def test_image_pixel_limit_and_truncated_data(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from PIL import Image
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(image_folder_mod, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(DataError, match=r"a\.png: image of 20x20 pixels is over the limit of 399"):
        ImageFolder(tmp_path)
    monkeypatch.setattr(image_folder_mod, "MAX_IMAGE_PIXELS", 400)
    assert len(ImageFolder(tmp_path)) == 1
    _png_header_only(tmp_path / "b.png", 20, 20)                     # header fine, data cut short
    with pytest.raises(DataError, match=r"b\.png: not a readable image"):
        ImageFolder(tmp_path)
