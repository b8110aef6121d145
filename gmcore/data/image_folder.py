"""Folders of PNG/JPEG images (read with Pillow, imported only when a folder is loaded).

Layout: ``root/<class>/<image>`` (labels are the sorted class folder names) or a flat
``root/<image>`` (one class, label 0). All images are loaded into one uint8 array, so they
must share a size unless ``size`` resizes them.
"""
import os
from pathlib import Path

import numpy as np

from ._images import ImageArrayDataset

__all__ = ["ImageFolder", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


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
            raise ValueError(f"{files[0]}: a file next to class folders in {root} (put images in "
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
            raise ValueError(f"{p}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)}; "
                             "pass ignore_other_files=True to skip other files)")
    if not kept:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    return kept, classes


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
        Image, Unidentified = _pil()
        items, classes = _scan(root, ignore_other_files)
        images = []
        for p, _ in items:
            try:
                with Image.open(p) as im:
                    im.load()
                    images.append(im.copy())
            except (Unidentified, OSError, SyntaxError, ValueError) as e:
                raise ValueError(f"{p}: not a readable image ({e})") from None
        if mode is None:
            grey = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
            mode = "L" if grey else "RGB"
        arrays = []
        first = None
        for (p, _), im in zip(items, images):
            if im.mode != mode:
                im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
            if first is None:
                first = (p, a.shape)
            elif a.shape != first[1]:
                raise ValueError(f"{p}: image of size {a.shape[1:]} but {first[0]} is "
                                 f"{first[1][1:]}; pass size=(height, width) to resize them")
            arrays.append(a)
        labels = np.array([k for _, k in items], dtype=np.int64)
        super().__init__(np.stack(arrays), labels, num_levels=256, name="image_folder",
                         scale=scale, classes=classes)
        self.root, self.mode = str(root), mode
        self.paths = [str(p) for p, _ in items]
