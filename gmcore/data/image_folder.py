"""Folders of PNG/JPEG images (read with Pillow, imported only when a folder is loaded).

Layout: ``root/<class>/<image>`` (labels are the sorted class folder names) or a flat
``root/<image>`` (one class, label 0). All images are loaded into one uint8 array, so they
must share a size unless ``size`` resizes them.
"""
import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from ._images import ImageArrayDataset
from .errors import DataError

__all__ = ["ImageFolder", "read_image", "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Pillow's own decompression-bomb threshold (about 256 MB of RGB): checked from the header,
# before any pixel is decoded
MAX_IMAGE_PIXELS = 89_478_485
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _pil():
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("image_folder needs Pillow: pip install pillow "
                          "(or pip install 'gmcore[images]')") from None
    return Image, UnidentifiedImageError


def _scan(root, ignore_other_files):
    """[(path, class index)], class names; hidden files are skipped."""
    entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    subdirs = [p for p in entries if p.is_dir()]
    files = [p for p in entries if p.is_file()]
    if subdirs:
        if files and not ignore_other_files:
            raise DataError(f"{files[0]}: a file next to class folders in {root} (put images in "
                            "class subfolders, or pass ignore_other_files=True)")
        classes = [d.name for d in subdirs]
        items = [(p, k) for k, d in enumerate(subdirs)
                 for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")]
    else:
        classes = [root.name]
        items = [(p, 0) for p in files]
    kept = []
    for p, k in items:
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            kept.append((p, k))
        elif not ignore_other_files:
            raise DataError(f"{p}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)}; "
                            "pass ignore_other_files=True to skip other files)")
    if not kept:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    return kept, classes


@contextlib.contextmanager
def _open(path):
    """``Image.open`` (header only) with a size bound; every failure is a DataError naming the file."""
    Image, Unidentified = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # refused just below
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: image too large to load ({e})") from None
    except (Unidentified, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    with im:
        w, h = im.size
        if w * h > MAX_IMAGE_PIXELS:
            raise DataError(f"{path}: image of {w}x{h} pixels is over the limit of "
                            f"{MAX_IMAGE_PIXELS} pixels (gmcore.data.image_folder.MAX_IMAGE_PIXELS); "
                            "shrink the file first")
        yield im


def read_image(path, size=None, mode="L") -> np.ndarray:
    """One image file as uint8 levels (C, H, W): ``mode`` "L" (C=1) or "RGB" (C=3), resized
    (bilinear) to ``size`` = (height, width) when given. Every failure is a DataError naming the
    file (unreadable, too large).

    >>> import tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> Image.new("RGB", (16, 12), (255, 0, 0)).save(path)
    >>> read_image(path, size=(8, 8)).shape
    (1, 8, 8)
    """
    Image, _ = _pil()
    size = _size_arg(size)
    with _open(path) as im:
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e})") from None
        if im.mode != mode:
            im = im.convert(mode)
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def _size_arg(size):
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be an int or (height, width) of positive ints, got {size}")
    return size


class ImageFolder(ImageArrayDataset):
    """Images from a folder as ``(image (C, H, W) float32 in [0, 1], label)``.

    Args:
        root: the folder (class subfolders, or images directly in it).
        size: ``None`` (keep sizes, which must all match), an int or ``(height, width)``:
            every image is resized to it (bilinear).
        mode: ``"L"`` (grey, C=1), ``"RGB"`` (C=3) or ``None``: grey when every image is grey,
            RGB otherwise (alpha is dropped, palettes expanded).
        scale: float32 in ``[0, 1]``; ``False`` gives uint8 levels.
        ignore_other_files: skip non-image files instead of raising.

    ``num_levels`` is 256; ``classes`` lists the class names, index = label.
    """

    def __init__(self, root, size=None, mode=None, scale=True, ignore_other_files=False):
        if root is None:
            raise ValueError("image_folder needs root=<folder of images>")
        if mode not in (None, "L", "RGB"):
            raise ValueError(f"mode must be None, 'L' or 'RGB', got {mode!r}")
        size = _size_arg(size)
        root = Path(os.fspath(root)).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        items, classes = _scan(root, ignore_other_files)
        # headers first (Image.open decodes no pixels): a giant image is refused before anything
        # is decoded, and only one full-size image is ever held in memory below
        modes = []
        for p, _ in items:
            with _open(p) as im:
                modes.append(im.mode)
        if mode is None:
            mode = "L" if all(m in _GREY_MODES for m in modes) else "RGB"
        arrays = []
        first = None
        for p, _ in items:
            a = read_image(p, size, mode)
            if first is None:
                first = (p, a.shape)
            elif a.shape != first[1]:
                raise DataError(f"{p}: image of size {a.shape[1:]} but {first[0]} is "
                                f"{first[1][1:]}; pass size=(height, width) to resize them")
            arrays.append(a)
        labels = np.array([k for _, k in items], dtype=np.int64)
        super().__init__(np.stack(arrays), labels, num_levels=256, name="image_folder",
                         scale=scale, classes=classes)
        self.root, self.mode = str(root), mode
        self.paths = [str(p) for p, _ in items]
