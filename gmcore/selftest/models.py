"""Model checks: a few tiny models train two optimizer steps on the device and sample.

Each model is built from the registry with a tiny config, moved to the device, given two Adam
steps on random data of the right kind, and must give finite losses and a sample of the data's
shape with values in the data's range.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .report import Row


def _images(rng, info, n):
    levels = info.num_levels
    return (rng.integers(0, levels, size=(n,) + tuple(info.shape)) / (levels - 1)).astype(np.float32)


def _codes(rng, info, n):
    return rng.integers(0, info.num_levels, size=(n,) + tuple(info.shape))


def _cases():
    from gmcore.models.base import DataInfo

    return [
        ("vae", dict(latent_dim=2, hidden=16), DataInfo((1, 8, 8), 17, "digits"), _images),
        ("pixelcnn", dict(channels=8, blocks=1, out_hidden=8, dropout=0.0), DataInfo((1, 6, 6), 5, "tiny"),
         _images),
        ("made", dict(hidden=16, num_masks=2), DataInfo((1, 3, 3), 2, "binary"), _images),
        ("wavenet", dict(residual_channels=4, gate_channels=4, skip_channels=8, head_channels=8, layers=3,
                         stacks=1, clip_length=16), DataInfo((16,), 256, "mu-law"), _codes),
    ]


def check_model(name, overrides, info, make_batch, device: str, seed: int = 0, steps: int = 2) -> Row:
    import gmcore as gm
    from gmcore.models import registry

    row = Row("model", "model", name, "train+sample", device, f"{steps} Adam steps, sample")
    start = time.perf_counter()
    try:
        gm.manual_seed(seed)
        rng = np.random.default_rng(seed)
        spec = registry.get(name)
        model = registry.build(name, spec.config_cls(**overrides), info).to(device)
        opt = gm.optim.Adam(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(steps):
            batch = (gm.tensor(make_batch(rng, info, 4), device=device),)
            out = model.loss(batch)
            loss = out[0] if isinstance(out, tuple) else out
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
        with gm.no_grad():
            sample = model.sample(2, generator=gm.Generator(device=device).manual_seed(seed))
        s = sample.detach().cpu().numpy()
        problems = []
        if not all(math.isfinite(v) for v in losses):
            problems.append(f"non-finite loss {losses}")
        want = (2,) + tuple(info.shape)
        if tuple(s.shape) != want:
            problems.append(f"sample shape {tuple(s.shape)}, expected {want}")
        lo, hi = (0, info.num_levels - 1) if make_batch is _codes else (0.0, 1.0)
        if not np.all(np.isfinite(s)) or s.min() < lo or s.max() > hi:
            problems.append(f"sample values in [{s.min():.3g}, {s.max():.3g}], expected [{lo}, {hi}]")
        row.detail = f"losses {', '.join(f'{v:.4g}' for v in losses)}; {time.perf_counter() - start:.2f} s"
        if problems:
            row.status, row.detail = "FAIL", "; ".join(problems)
    except Exception as exc:
        row.status, row.detail = "FAIL", f"error: {type(exc).__name__}: {exc}"
    return row


def run_model_checks(device: str, seed: int = 0) -> list[Row]:
    return [check_model(name, cfg, info, make, device, seed) for name, cfg, info, make in _cases()]
