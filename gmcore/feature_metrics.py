"""Sample-quality distances on the features of a small digits classifier: "digits-FID", KID,
precision and recall.

These are **not** Inception FID: Inception weights cannot be downloaded here, and 8x8 digits
are not ImageNet photos. The feature extractor is an MLP classifier (64 -> 128 -> 64 -> 10,
ReLU) that gmcore trains on the digits training split with a fixed seed (about a second on
a CPU) and caches in ``$GMCORE_CACHE`` (default ``~/.cache/gmcore``). Features are its
64-dimensional penultimate activations. Figures are comparable only with other digits-FID
figures from the same classifier version (:data:`CLASSIFIER_VERSION`).

* digits-FID: Frechet distance between Gaussians fitted to real and generated features,
  ``|mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^1/2)`` (Heusel et al., 2017).
* KID: unbiased MMD^2 with the cubic polynomial kernel ``(x.y / d + 1)^3``, averaged over
  random subsets (Binkowski et al., 2018).
* precision / recall: the k-nearest-neighbour manifold estimate of Kynkaanniemi et al.
  (2019) with k = 3: the fraction of generated samples inside some real sample's k-NN ball,
  and the reverse.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import creation as gc
from .autograd import no_grad
from .nn import functional as F
from .tensor import Tensor

__all__ = ["CLASSIFIER_VERSION", "DigitsFeatures", "frechet_distance", "kid", "precision_recall",
           "sample_quality"]

CLASSIFIER_VERSION = 1
_SIZES = (64, 128, 64, 10)


def _cache_dir() -> Path:
    return Path(os.environ.get("GMCORE_CACHE") or Path.home() / ".cache" / "gmcore")


class DigitsFeatures:
    """The digits classifier used as feature extractor (trained on first use, then cached).

    >>> import gmcore as gm
    >>> from gmcore.data.digits import load_digits_arrays
    >>> net = DigitsFeatures.get()
    >>> x, y = load_digits_arrays("test")
    >>> bool(net.accuracy(x / 16.0, y) > 0.9)
    True
    """

    _instance = None

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = {k: Tensor(np.asarray(v, dtype=np.float64)) for k, v in weights.items()}

    @classmethod
    def get(cls) -> "DigitsFeatures":
        if cls._instance is None:
            path = _cache_dir() / f"digits_classifier-v{CLASSIFIER_VERSION}.safetensors"
            from . import io

            if path.exists():
                try:
                    w = {k: v.numpy() for k, v in io.load(path).items()}
                except Exception:  # a corrupt cache is rebuilt, never trusted
                    w = _train_classifier()
                    io.save(w, path)
            else:
                w = _train_classifier()
                try:
                    io.save(w, path)
                except OSError:
                    pass  # read-only home: train again next time
            cls._instance = cls(w)
        return cls._instance

    def _forward(self, images) -> tuple[Tensor, Tensor]:
        x = np.asarray(images.detach().cpu().numpy() if isinstance(images, Tensor) else images, np.float64)
        if x.ndim < 2 or x[0].size != 64:
            raise ValueError(f"digits features need 8x8 images (N, 1, 8, 8) or (N, 64), got shape {x.shape}")
        h = Tensor(x.reshape(len(x), 64))
        w = self.weights
        with no_grad():
            h = F.linear(h, w["w0"], w["b0"]).relu()
            feats = F.linear(h, w["w1"], w["b1"]).relu()
            logits = F.linear(feats, w["w2"], w["b2"])
        return feats, logits

    def features(self, images) -> np.ndarray:
        """(N, 64) penultimate features of images in [0, 1]."""
        return self._forward(images)[0].numpy()

    def accuracy(self, images, labels) -> float:
        return float((self._forward(images)[1].numpy().argmax(1) == np.asarray(labels)).mean())


def _train_classifier(steps: int = 800, seed: int = 0) -> dict[str, np.ndarray]:
    """Train the feature classifier on the digits training split (fixed seed, float64)."""
    from .data.digits import load_digits_arrays
    from .optim import Adam
    from .random import Generator

    x, y = load_digits_arrays("train")
    x = Tensor(x.reshape(len(x), 64).astype(np.float64) / 16.0)
    y = Tensor(y)
    rng = np.random.Generator(np.random.PCG64(seed))
    params = {}
    for i, (a, b) in enumerate(zip(_SIZES[:-1], _SIZES[1:])):
        bound = 1.0 / np.sqrt(a)
        params[f"w{i}"] = Tensor(rng.uniform(-bound, bound, (b, a)), requires_grad=True)
        params[f"b{i}"] = Tensor(np.zeros(b), requires_grad=True)
    opt = Adam(list(params.values()), lr=3e-3, weight_decay=0.0)
    gen = Generator().manual_seed(seed)
    for _ in range(steps):
        idx = gc.randint(0, x.shape[0], (128,), generator=gen)
        h = x[idx]
        for i in range(3):
            h = F.linear(h, params[f"w{i}"], params[f"b{i}"])
            if i < 2:
                h = h.relu()
        loss = F.cross_entropy(h, y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().numpy().copy() for k, v in params.items()}


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, d).

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(2000, 3)); b = rng.normal(size=(2000, 3)) + [2.0, 0, 0]
    >>> round(frechet_distance(a, b))   # |mean difference|^2 = 4
    4
    """
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    s_a, s_b = np.cov(feats_a, rowvar=False), np.cov(feats_b, rowvar=False)
    root_a = _sqrtm_psd(s_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * cross)


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 20, subset_size: int = 200,
        seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance (unbiased MMD^2, cubic kernel): mean and std over subsets."""
    rng = np.random.default_rng(seed)
    d = feats_a.shape[1]
    m = min(subset_size, len(feats_a), len(feats_b))
    if m < 2:
        raise ValueError("kid needs at least 2 samples in each set")
    vals = []
    for _ in range(subsets):
        a = feats_a[rng.choice(len(feats_a), m, replace=False)]
        b = feats_b[rng.choice(len(feats_b), m, replace=False)]
        kaa, kbb, kab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        vals.append((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                    - 2 * kab.mean())
    return float(np.mean(vals)), float(np.std(vals))


def _knn_radii(feats: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(np.maximum(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1), 0))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall (Kynkaanniemi et al., 2019)."""
    def coverage(ref, query):
        radii = _knn_radii(ref, k)
        dist = np.sqrt(np.maximum(((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1), 0))
        return float((dist <= radii[None, :]).any(1).mean())

    return coverage(real, fake), coverage(fake, real)


def sample_quality(samples, real_dataset) -> dict:
    """digits-FID, KID and precision/recall of ``samples`` (N, 1, 8, 8) in [0, 1] against a
    digits split, plus the same FID between the training and test splits as a scale."""
    from .data.digits import load_digits_arrays

    net = DigitsFeatures.get()
    fake = net.features(samples)
    real = net.features(real_dataset.arrays[0] / (real_dataset.num_levels - 1))
    train_real = net.features(load_digits_arrays("train")[0] / 16.0)
    k_mean, k_std = kid(real, fake)
    prec, rec = precision_recall(real, fake)
    return {"digits_fid": frechet_distance(real, fake), "digits_kid": k_mean, "digits_kid_std": k_std,
            "precision": prec, "recall": rec, "num_quality_samples": int(len(fake)),
            "digits_fid_train_vs_test": frechet_distance(real, train_real),
            "feature_net": f"digits MLP classifier v{CLASSIFIER_VERSION} (not Inception)"}
