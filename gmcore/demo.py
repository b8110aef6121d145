"""A tiny worked example: a 2-layer MLP classifier on generated two-moons data, trained with
gmcore's autograd and plain SGD with momentum. ``gmcore demo`` runs it.

It shows the whole engine path a model uses: factories and seeded randomness, tensor ops,
``nn.functional`` losses, ``backward``, and parameter updates under ``no_grad``.
"""
import math
import time

import gmcore as gm
import gmcore.nn.functional as F


def two_moons(n, noise=0.1, generator=None):
    """``n`` points of two interleaved half circles, labels 0/1 (generated, nothing downloaded)."""
    g = generator or gm.Generator().manual_seed(0)
    t = gm.rand(n, generator=g, dtype=gm.float64) * math.pi
    label = gm.randint(0, 2, (n,), generator=g)
    x = gm.where(label == 0, t.cos(), 1 - t.cos())
    y = gm.where(label == 0, t.sin(), 0.5 - t.sin())
    points = gm.stack([x, y], dim=1) + noise * gm.randn(n, 2, generator=g, dtype=gm.float64)
    return points.float(), label


def init_mlp(sizes, generator):
    """Weights with Kaiming-uniform scale, biases zero, as (weight, bias) pairs."""
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        w = (gm.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound * math.sqrt(3)
        params.append((w.requires_grad_(), gm.zeros(fan_out, requires_grad=True)))
    return params


def mlp(params, x):
    for i, (w, b) in enumerate(params):
        x = F.linear(x, w, b)
        if i < len(params) - 1:
            x = F.relu(x)
    return x


def run(steps=300, hidden=64, lr=0.1, momentum=0.9, seed=0, log_every=50, out=print):
    """Train and return the final (train loss, test accuracy)."""
    g = gm.Generator().manual_seed(seed)
    x_train, y_train = two_moons(512, generator=g)
    x_test, y_test = two_moons(512, generator=g)
    params = init_mlp([2, hidden, hidden, 2], g)
    flat = [p for pair in params for p in pair]
    velocity = [gm.zeros_like(p) for p in flat]
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = F.cross_entropy(mlp(params, x_train), y_train)
        for p in flat:
            p.grad = None
        loss.backward()
        with gm.no_grad():
            for p, v in zip(flat, velocity):
                v.mul_(momentum).add_(p.grad)
                p.sub_(lr * v)
        if step % log_every == 0 or step == 1:
            out(f"step {step:4d}  train loss {loss.item():.4f}")
    with gm.no_grad():
        acc = (mlp(params, x_test).argmax(1) == y_test).float().mean().item()
    out(f"test accuracy {acc:.3f}  ({steps} steps in {time.perf_counter() - start:.1f} s)")
    return loss.item(), acc


if __name__ == "__main__":
    run()
