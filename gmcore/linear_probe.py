"""Linear probes: how much of the labels a fixed feature map makes linearly readable.

A linear probe is a multinomial logistic regression fitted on frozen features of a training
split and scored (accuracy) on a test split: the usual measure of a representation learnt
without labels (BiGAN's encoder, Donahue et al. 2017). It is plain NumPy in float64 and
deterministic (no random draws): the features are standardised with the training split's mean
and standard deviation, then

    minimise  mean_n CE(softmax(W x_n + b), y_n) + l2 / 2 * ||W||^2      (b not penalised)

by Nesterov's accelerated gradient with adaptive restart (O'Donoghue & Candes 2015) on
Boehning's bound of the Hessian (the gradient preconditioned by ``(0.5 X^T X / N + l2)^-1``), so
no step size needs tuning. The objective is strictly convex in W, so the fit is the unique
minimiser, whatever the starting point; ``tol`` bounds the gradient's norm at the end.

>>> import numpy as np
>>> x = np.array([[0.0, 1.0], [0.1, 0.9], [1.0, 0.0], [0.9, 0.2]])
>>> probe = LinearProbe.fit(x, np.array([0, 0, 1, 1]), l2=1e-2)
>>> probe.predict(np.array([[0.0, 0.8], [0.8, 0.1]])).tolist(), probe.accuracy(x, [0, 0, 1, 1])
([0, 1], 1.0)
"""
from __future__ import annotations

import numpy as np

__all__ = ["LinearProbe", "linear_probe_accuracy"]


def _as_features(name: str, x) -> np.ndarray:
    x = np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"linear probe: {name} must be (N, ...) features with N > 0, got shape {x.shape}")
    x = x.reshape(x.shape[0], -1)
    if not np.isfinite(x).all():
        raise ValueError(f"linear probe: {name} hold non-finite values")
    return x


def _as_labels(name: str, y, n: int) -> np.ndarray:
    y = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"linear probe: {name} must be ({n},) non-negative integer class labels, got "
                         f"shape {y.shape} of {y.dtype}")
    return y.astype(np.int64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class LinearProbe:
    """A fitted multinomial logistic regression on standardised features (see the module
    docstring). ``fit(features, labels)`` builds one; ``predict`` and ``accuracy`` use it."""

    def __init__(self, mean, scale, weight, bias, iterations: int, grad_norm: float, l2: float):
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias
        self.iterations, self.grad_norm, self.l2 = iterations, grad_norm, l2

    @classmethod
    def fit(cls, features, labels, l2: float = 1e-2, num_classes: int | None = None, tol: float = 1e-4,
            max_iterations: int = 5000) -> LinearProbe:
        """Fit on ``features`` (N, ...) (flattened to (N, D)) and integer ``labels`` (N,);
        ``num_classes`` defaults to ``max(labels) + 1``. Stops when the gradient's norm is below
        ``tol`` or after ``max_iterations`` (``grad_norm`` and ``iterations`` say which)."""
        x = _as_features("features", features)
        y = _as_labels("labels", labels, x.shape[0])
        if not l2 > 0:
            raise ValueError(f"linear probe: l2 must be positive (it makes the fit unique), got {l2}")
        k = int(num_classes if num_classes is not None else y.max() + 1)
        if k < 2 or y.max() >= k:
            raise ValueError(f"linear probe: needs 2 or more classes holding every label, got num_classes={k} "
                             f"for labels up to {y.max()}")
        mean = x.mean(0)
        scale = x.std(0)
        scale[scale < 1e-8] = 1.0        # a constant feature (a digit's blank corner) stays 0
        xs = (x - mean) / scale
        n, d = xs.shape
        target = np.zeros((n, k))
        target[np.arange(n), y] = 1.0
        xb = np.concatenate([xs, np.ones((n, 1))], 1)      # the bias as a last, unpenalised row
        penalty = np.full((d + 1, 1), float(l2))
        penalty[-1] = 0.0
        # Boehning (1992): the Hessian of the mean cross-entropy is at most 0.5 X^T X / N in each
        # class's block, so with P = 0.5 X^T X / N + l2 the step W - P^-1 grad never overshoots
        # (a majorise-minimise step); Nesterov's momentum on it, in P's metric, converges in
        # tens to hundreds of iterations where a plain gradient step takes thousands.
        # (positive definite: l2 > 0 on the features, and the bias's column of ones gives its 1)
        precond_inv = np.linalg.inv(0.5 * (xb.T @ xb) / n + np.diag(penalty[:, 0]))

        def gradient(w):
            return xb.T @ (_softmax(xb @ w) - target) / n + penalty * w

        w = np.zeros((d + 1, k))
        v, t = w.copy(), 1.0
        grad_norm, it = np.inf, 0
        while it < max_iterations:
            it += 1
            g = gradient(v)
            w_next = v - precond_inv @ g
            grad_norm = float(np.linalg.norm(g))
            if grad_norm < tol:
                w = v
                break
            if ((w_next - w) * g).sum() > 0:     # adaptive restart: momentum pointed uphill
                t = 1.0
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            v = w_next + (t - 1.0) / t_next * (w_next - w)
            w, t = w_next, t_next
        return cls(mean, scale, w[:-1], w[-1], it, grad_norm, float(l2))

    def logits(self, features) -> np.ndarray:
        x = _as_features("features", features)
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(f"linear probe: fitted on {self.weight.shape[0]} features, got {x.shape[1]}")
        return (x - self.mean) / self.scale @ self.weight + self.bias

    def predict(self, features) -> np.ndarray:
        """The most probable class of each row (N,)."""
        return self.logits(features).argmax(1)

    def accuracy(self, features, labels) -> float:
        """The fraction of rows whose predicted class is the label."""
        pred = self.predict(features)
        return float((pred == _as_labels("labels", labels, pred.shape[0])).mean())


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, l2: float = 1e-2) -> float:
    """Test accuracy of a :class:`LinearProbe` fitted on the training features.

    >>> import numpy as np
    >>> x = np.eye(3).repeat(2, 0)          # three classes, two identical rows each
    >>> linear_probe_accuracy(x, [0, 0, 1, 1, 2, 2], x[::-1], [2, 2, 1, 1, 0, 0])
    1.0
    """
    probe = LinearProbe.fit(train_features, train_labels, l2=l2)
    return probe.accuracy(test_features, test_labels)
