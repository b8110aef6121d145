"""The dataset registry: ``DATASETS`` (name -> description, default options) and ``get_dataset``.

The CLI (``gmcore train --dataset digits``) resolves names here. Data sets marked
``needs_root`` read files the user brings (``root=``); nothing is ever downloaded.
"""
from dataclasses import dataclass, field

__all__ = ["DATASETS", "DatasetInfo", "get_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    """One registry entry: what the data set is, its default options, how to build it."""

    name: str
    description: str
    defaults: dict = field(default_factory=dict)
    needs_root: bool = False
    kind: str = "image"          # image | points | text | audio

    def build(self, split, root, options):
        from . import audio, cifar, digits, idx, image_folder, text, toy2d
        opts = {**self.defaults, **options}
        if self.name == "digits":
            return digits.Digits(split, **opts)
        if self.name == "mnist":
            return idx.MNIST(root, split, **opts)
        if self.name == "cifar10":
            return cifar.CIFAR10(root, split, **opts)
        if self.name == "image_folder":
            return image_folder.ImageFolder(_split_root(root, split), **opts)
        if self.name in toy2d.TOY2D:
            return toy2d.Toy2D(self.name, split=split, **opts)
        if self.name == "text":
            return text.CharText(split, path=root, **opts)
        if self.name == "audio":
            return audio.Audio(split, path=root, **opts)
        raise AssertionError(self.name)


def _reads_files(info: DatasetInfo) -> bool:
    """Whether a data set takes a root (its files, or text/audio replacing the default)."""
    return info.needs_root or info.kind in ("text", "audio")


def _split_root(root, split):
    """``root/train`` and ``root/test`` when both exist; otherwise ``root`` for either split."""
    import os
    if root is not None and os.path.isdir(os.path.join(root, "train")) \
            and os.path.isdir(os.path.join(root, "test")):
        return os.path.join(root, split)
    return root


_IMG = {"scale": True, "binarize": None, "seed": 0}
_TOY = "2-D toy set, generated from a seed"

DATASETS = {info.name: info for info in [
    DatasetInfo("digits", "8x8 handwritten digits shipped with gmcore (UCI optdigits, CC BY 4.0): "
                "1500 train / 297 test, (1, 8, 8), 17 levels", dict(_IMG)),
    DatasetInfo("mnist", "MNIST-format IDX files (raw or .gz) from root: (1, 28, 28), 256 levels",
                dict(_IMG), needs_root=True),
    DatasetInfo("cifar10", "CIFAR-10 python batches from root: (3, 32, 32), 256 levels",
                {"scale": True}, needs_root=True),
    DatasetInfo("image_folder", "PNG/JPEG files from root (class subfolders or flat; root/train "
                "and root/test when present): (C, H, W), 256 levels",
                {"size": None, "mode": None, "scale": True, "ignore_other_files": False},
                needs_root=True),
    DatasetInfo("moons", f"two moons; {_TOY}", {"n": 1000, "noise": 0.05, "seed": 0}, kind="points"),
    DatasetInfo("circles", f"two circles; {_TOY}", {"n": 1000, "noise": 0.05, "seed": 0},
                kind="points"),
    DatasetInfo("swiss_roll", f"2-D swiss roll; {_TOY}", {"n": 1000, "noise": 0.05, "seed": 0},
                kind="points"),
    DatasetInfo("8gaussians", f"8 gaussians on a circle; {_TOY}", {"n": 1000, "noise": 0.1, "seed": 0},
                kind="points"),
    DatasetInfo("checkerboard", f"4x4 checkerboard; {_TOY}", {"n": 1000, "noise": 0.0, "seed": 0},
                kind="points"),
    DatasetInfo("text", "character-level text: root=<UTF-8 file>, default the stdlib pydoc topics",
                {"seq_len": 64, "stride": None, "train_fraction": 0.9}, kind="text"),
    DatasetInfo("audio", "mono audio clips as mu-law codes: root=<WAV file or folder>, default a "
                "synthetic 16 kHz signal", {"clip_length": 4000, "sample_rate": None,
                                            "quantization_channels": 256, "encoding": "mu_law"},
                kind="audio"),
]}

# options a data set accepts beyond its listed defaults
_EXTRA = {"cifar10": set(), "text": {"unk", "text"}, "audio": {"test_fraction", "seconds", "seed"},
          "toy": set()}


def get_dataset(name, split="train", root=None, **options):
    """Build a registered data set by name.

    >>> ds = get_dataset("digits", split="test")
    >>> ds.name, len(ds), ds.num_levels
    ('digits', 297, 17)
    >>> get_dataset("moons", n=10).shape
    (2,)
    """
    info = DATASETS.get(name)
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if info.needs_root and root is None:
        raise ValueError(f"dataset {name!r} reads files you provide: give their folder with "
                         "--data-root (root= in Python); nothing is downloaded")
    if root is not None and not _reads_files(info):
        # a root that would be ignored is refused: the user meant some other data
        raise ValueError(f"dataset {name!r} is built in and reads no files, so --data-root (root=) "
                         f"{str(root)!r} would be ignored; drop it, or choose a data set that reads "
                         "files: " + ", ".join(n for n, i in DATASETS.items() if _reads_files(i)))
    allowed = set(info.defaults) | _EXTRA.get(name, set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"dataset {name!r} got unknown option(s) {unknown}; "
                        f"accepted: {sorted(allowed)}")
    return info.build(split, root, options)
