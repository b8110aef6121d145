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
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
        if bad.any():   # else the FID's matrix square root fails far from the cause
            raise ValueError(f"digits features: {int(bad.sum())} of {len(x)} images have non-finite "
                             f"pixels (NaN or inf), e.g. image {int(np.argmax(bad))}; the sampler "
                             "that drew them diverged")
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

    def predict(self, images) -> np.ndarray:
        """(N,) the digit each image is read as."""
        return self._forward(images)[1].numpy().argmax(1)

    def accuracy(self, images, labels) -> float:
        return float((self.predict(images) == np.asarray(labels)).mean())


def _train_classifier(steps: int = 800, seed: int = 0) -> dict[str, np.ndarray]:
    """Train the feature classifier on the digits training split (fixed seed, float64).

    Autograd is switched on here: the first use (a cache miss) may come from code that draws
    samples under ``no_grad``."""
    from .autograd import enable_grad

    with enable_grad():
        return _fit_classifier(steps, seed)


def _fit_classifier(steps: int, seed: int) -> dict[str, np.ndarray]:
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


# Distance blocks hold at most this many float64 entries (4 MiB): memory is O(N x block), not
# the N x N x d array of the broadcast form (3.3 GB for 2500 samples of 64 features).
_BLOCK_ELEMENTS = 1 << 19


def _block_rows(n_cols: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, n_cols))


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared distances |a_i - b_j|^2 through |a|^2 - 2 a.b + |b|^2 (float64).

    The expansion carries an absolute rounding error of a few ``d * eps * (|a|^2 + |b|^2)``: it
    can go slightly negative, and two equal points need not come out exactly 0. Values inside
    that error bound are set to 0, so duplicates are at distance 0, as with the direct form.
    """
    d2 = a @ b.T                      # in place from here: one block-sized array
    d2 *= -2.0
    d2 += a_sq[:, None]
    d2 += b_sq[None, :]
    noise = (4.0 * a.shape[1] * np.finfo(np.float64).eps) * (a_sq + b_sq.max(initial=0.0))
    d2[d2 <= noise[:, None]] = 0.0
    return d2


def _knn_radii_sq(feats: np.ndarray, k: int, block_elements: int = _BLOCK_ELEMENTS) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row, one block of rows at a time."""
    n = len(feats)
    sq = np.einsum("ij,ij->i", feats, feats)
    out = np.empty(n)
    step = _block_rows(n, block_elements)
    for i in range(0, n, step):
        d2 = _sq_dists(feats[i:i + step], sq[i:i + step], feats, sq)
        rows = np.arange(d2.shape[0])
        d2[rows, i + rows] = 0.0      # the point itself sorts first, exactly as in exact arithmetic
        out[i:i + step] = np.partition(d2, k, axis=1)[:, k]
    return out


def _coverage(ref: np.ndarray, query: np.ndarray, k: int,
              block_elements: int = _BLOCK_ELEMENTS) -> float:
    """Fraction of ``query`` rows inside the k-NN ball of at least one ``ref`` row."""
    radii_sq = _knn_radii_sq(ref, k, block_elements)
    ref_sq = np.einsum("ij,ij->i", ref, ref)
    query_sq = np.einsum("ij,ij->i", query, query)
    step = _block_rows(len(ref), block_elements)
    inside = 0
    for i in range(0, len(query), step):
        d2 = _sq_dists(query[i:i + step], query_sq[i:i + step], ref, ref_sq)
        inside += int((d2 <= radii_sq[None, :]).any(1).sum())
    return inside / len(query)


def _check_features(name: str, feats, k: int) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"precision_recall: {name} features must be (N, d), got shape {feats.shape}")
    if len(feats) <= k:
        raise ValueError(f"precision_recall: {name} has {len(feats)} samples; k={k} nearest "
                         f"neighbours need at least {k + 1}")
    return feats


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """k-NN precision and recall (Kynkaanniemi et al., 2019) of ``fake`` against ``real`` (N, d).

    Precision is the fraction of fake samples inside the k-NN ball of some real sample, recall
    the reverse. Distances are computed in float64 by blocks of rows, so memory grows as
    N x block, never N x N.

    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(300, 4))
    >>> precision_recall(real, real)
    (1.0, 1.0)
    >>> p, r = precision_recall(real, real + 10.0); p, r
    (0.0, 0.0)
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"precision_recall: k must be a positive integer, got {k!r}")
    real, fake = _check_features("real", real, k), _check_features("fake", fake, k)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: real features have {real.shape[1]} dims but fake "
                         f"features have {fake.shape[1]}")
    return _coverage(real, fake, k), _coverage(fake, real, k)


def sample_quality(samples, real_dataset, labels=None) -> dict:
    """digits-FID, KID and precision/recall of ``samples`` (N, 1, 8, 8) in [0, 1] against a
    digits split, plus the same FID between the training and test splits as a scale; with the
    ``labels`` (N,) the samples were drawn for (a class-conditional model), ``label_accuracy``:
    how often the digits classifier reads a sample as its label."""
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
            "feature_net": f"digits MLP classifier v{CLASSIFIER_VERSION} (not Inception)",
            **({"label_accuracy": net.accuracy(samples, labels)} if labels is not None else {})}
