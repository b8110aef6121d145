"""Write the embedded digits as CIFAR-10 "python version" batches (3x32x32, 8-bit), so that the
32x32 three-channel path of the image models can be trained and timed offline.

Each 8x8 digit is enlarged 4x (nearest neighbour), scaled from 17 levels to 0..255 and tinted
with a colour drawn per image (so the three channels differ but stay correlated). These are
not CIFAR-10 images: figures from them measure speed and check that the path works; they say
nothing about CIFAR-10 results.

    python benchmarks/cifar_shaped_digits.py /tmp/cifar-digits
    gmcore train vqvae --dataset cifar10 --data-root /tmp/cifar-digits --steps 300
"""
from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def cifar_shaped(levels: np.ndarray, num_levels: int, rng: np.random.Generator) -> np.ndarray:
    """(N, 1, 8, 8) levels -> (N, 3072) uint8 rows in CIFAR's channel-major layout."""
    big = levels.repeat(4, axis=2).repeat(4, axis=3).astype(np.float64) / (num_levels - 1)
    tint = rng.uniform(0.35, 1.0, size=(levels.shape[0], 3, 1, 1))
    rgb = np.round(big * tint * 255.0).astype(np.uint8)          # (N, 3, 32, 32)
    return rgb.reshape(rgb.shape[0], -1)


def write(folder: Path, seed: int = 0) -> None:
    from gmcore.data import get_dataset

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        ds = get_dataset("digits", split)
        levels, labels = ds.arrays
        rows = cifar_shaped(levels, ds.num_levels, rng)
        for name, part in zip(names, np.array_split(np.arange(len(rows)), len(names))):
            batch = {b"data": rows[part], b"labels": [int(v) for v in labels[part]]}
            tmp = folder / (name + ".tmp")
            tmp.write_bytes(pickle.dumps(batch, protocol=2))
            tmp.replace(folder / name)
        print(f"{split}: {len(rows)} images in {', '.join(names)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    write(args.folder, args.seed)


if __name__ == "__main__":
    main()
