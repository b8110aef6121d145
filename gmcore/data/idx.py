"""IDX files (the MNIST format), raw or gzip-compressed, and the ``MNIST`` dataset over them.

IDX layout: two zero bytes, a type code byte, the number of dimensions ``d``; then ``d``
big-endian uint32 sizes; then the values, big-endian, row-major. Files ending in ``.gz`` are
decompressed transparently.
"""
import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from ._images import ImageArrayDataset, check_labels, check_split
from .errors import DataError

__all__ = ["read_idx", "write_idx", "MNIST"]

_CODES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODE_OF = {np.dtype(v).newbyteorder("=") if v.itemsize > 1 else v: k for k, v in _CODES.items()}


# deflate expands at most ~1032:1, so a .gz file of M bytes can't hold more than this many
_GZIP_MAX_RATIO = 1100
_CHUNK = 1 << 20


def _read_exact(f, n):
    """Up to ``n`` bytes from ``f`` in chunks (``read(n)`` would allocate ``n`` bytes at once)."""
    parts, got = [], 0
    while got < n:
        part = f.read(min(_CHUNK, n - got))
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _parse_header(head, path):
    """(dtype, dims, header length) from the first bytes of an IDX file."""
    if len(head) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(head)} bytes, no complete header)")
    if head[0] != 0 or head[1] != 0 or head[2] not in _CODES:
        raise DataError(f"{path}: not an IDX file (bad magic number 0x{head[:4].hex()}; expected "
                        "0x0000 followed by a type code 08/09/0B/0C/0D/0E and the number of dims)")
    ndim = head[3]
    header = 4 + 4 * ndim
    if len(head) < header:
        raise DataError(f"{path}: truncated IDX header (needs {header} bytes for {ndim} dims, "
                        f"file has {len(head)})")
    dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return _CODES[head[2]], dims, header


def _payload(dtype, dims):
    n = dtype.itemsize
    for d in dims:
        n *= d             # Python ints: 4 x 65536^3 does not wrap around to 0 as int64 would
    return n


def _read_checked(path):
    """(dtype, dims, data bytes): the header is read and checked against the file's length before
    the data is read, so a lying header costs nothing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        if path.suffix != ".gz":
            with open(path, "rb") as f:
                head = f.read(4)
                head += f.read(4 * head[3]) if len(head) == 4 else b""
                dtype, dims, header = _parse_header(head, path)
                expected, got = _payload(dtype, dims), path.stat().st_size - header
                _check_length(path, dims, expected, got)
                return dtype, dims, f.read(expected)
        compressed = path.stat().st_size
        with gzip.open(path, "rb") as f:
            head = _read_exact(f, 4)
            head += _read_exact(f, 4 * head[3]) if len(head) == 4 else b""
            dtype, dims, header = _parse_header(head, path)
            expected = _payload(dtype, dims)
            if expected > _GZIP_MAX_RATIO * compressed:
                raise DataError(f"{path}: the IDX header claims dims {dims} ({expected} bytes), more "
                                f"than a {compressed}-byte gzip file can hold")
            data = _read_exact(f, expected + 1)     # one more byte reveals trailing data
            extra = len(f.read(_CHUNK)) if len(data) > expected else 0
            _check_length(path, dims, expected, len(data) + extra)
            return dtype, dims, data
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None


def _check_length(path, dims, expected, got):
    if got < expected:
        raise DataError(f"{path}: truncated IDX data: dims {dims} need {expected} bytes, "
                        f"file holds {got}")
    if got > expected:
        raise DataError(f"{path}: {got - expected}{'+' if got - expected >= _CHUNK else ''} "
                        f"unexpected bytes after the IDX data for dims {dims}")


def read_idx(path):
    """Read an IDX file (``.gz`` or raw) into a NumPy array in native byte order.

    Errors (bad magic, truncated or oversized data, a header claiming more than the file
    holds) are ``DataError`` (a ``ValueError``) naming the file.

    >>> import tempfile, os, numpy as np
    >>> p = os.path.join(tempfile.mkdtemp(), "x-idx2-ubyte.gz")
    >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(p).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    dtype, dims, data = _read_checked(path)
    arr = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
    return arr.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write an array as an IDX file (gzip-compressed when ``path`` ends in ``.gz``)."""
    array = np.asarray(array)
    dt = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if dt not in _CODE_OF:
        raise TypeError(f"IDX can't store dtype {array.dtype} (uint8, int8, int16, int32, "
                        "float32, float64)")
    if array.ndim > 255:
        raise ValueError("IDX stores at most 255 dimensions")
    code = _CODE_OF[dt]
    body = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
            + np.ascontiguousarray(array, dtype=_CODES[code]).tobytes())
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(body)


_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(root, stem):
    """``stem``, ``stem.gz`` or the dotted spelling (``train-images.idx3-ubyte``) under root."""
    dotted = stem.replace("-idx", ".idx")
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {root} (also looked in "
                            f"{root / 'raw'} and {root / 'MNIST' / 'raw'})")


class MNIST(ImageArrayDataset):
    """MNIST-format images (MNIST, Fashion-MNIST, KMNIST ...) from IDX files in ``root``.

    ``root`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each raw or ``.gz``). Examples are
    ``(image (1, H, W) float32 in [0, 1], label)``; ``num_levels`` is 256. ``scale``,
    ``binarize`` and ``seed`` are as for ``Digits``. Images are kept as uint8 in memory.
    """

    def __init__(self, root, split="train", scale=True, binarize=None, seed=0):
        check_split(split)
        if root is None:
            raise ValueError("MNIST needs root=<folder holding the IDX files>; nothing is downloaded")
        root = Path(os.fspath(root)).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"MNIST folder not found: {root}")
        img_path, lab_path = (_find(root, s) for s in _MNIST_FILES[split])
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{img_path}: expected uint8 images of shape (N, H, W), got "
                             f"{images.dtype} with shape {images.shape}")
        if labels.ndim != 1:
            raise ValueError(f"{lab_path}: expected labels of shape (N,), got shape {labels.shape}")
        if labels.shape[0] != images.shape[0]:
            raise DataError(f"{lab_path} has {labels.shape[0]} labels but {img_path} has "
                            f"{images.shape[0]} images")
        if images.shape[0] == 0:
            raise DataError(f"{img_path}: the MNIST {split} split holds no images (dims "
                            f"{images.shape}); an empty data set can't be trained or evaluated")
        check_labels(labels, 10, lab_path)
        super().__init__(images[:, None], labels.astype(np.int64), num_levels=256, name="mnist",
                         scale=scale, binarize=binarize, seed=seed)
        self.split, self.root = split, str(root)
