"""The optimisation loop of score distillation, the views it is judged on, and what it writes.

Each step renders the scene from ``views`` azimuths drawn uniformly in [-range, range] degrees,
maps the images from the data's [0, 1] to the diffusion's [-1, 1] (the run's own ``to_diffusion``),
and takes one Adam step on the SDS surrogate (the mean over the views). The result is judged on
``eval_views`` azimuths evenly spread over the range: the fraction the digits classifier
(:class:`gmcore.feature_metrics.DigitsFeatures`) reads as the dreamt class.
"""
from __future__ import annotations

import io as _io
import json
import time
from pathlib import Path

import numpy as np

from .. import creation as gc
from ..autograd import no_grad
from ..io import atomic_write_bytes
from ..optim import Adam
from .scene import make_scene
from .sds import SDS, DiffusionPrior

__all__ = ["dream", "eval_azimuths", "render_views", "view_accuracy", "save_outputs"]


def eval_azimuths(azimuth_range: float, n: int = 13) -> np.ndarray:
    """``n`` azimuths evenly across [-range, range] degrees (both ends included)."""
    return np.linspace(-azimuth_range, azimuth_range, n) if n > 1 else np.zeros(1)


def render_views(scene, azimuths) -> np.ndarray:
    """The scene's views (N, C, H, W) in [0, 1] at ``azimuths`` (degrees), as a float32 array."""
    with no_grad():
        return scene(np.asarray(azimuths, dtype=np.float64)).detach().cpu().numpy().astype(np.float32)


def view_accuracy(views: np.ndarray, label: int) -> tuple[float, list[int]]:
    """(fraction of views the digits classifier reads as ``label``, its reading of each view)."""
    from ..autograd import enable_grad
    from ..feature_metrics import DigitsFeatures

    with enable_grad():              # the classifier trains on first use (a cache miss)
        net = DigitsFeatures.get()
    pred = net._forward(views)[1].numpy().argmax(1)
    return float((pred == label).mean()), [int(p) for p in pred]


def dream(prior: DiffusionPrior, representation: str = "voxels", steps: int = 400, lr: float = 0.05,
          views: int = 4, azimuth_range: float = 30.0, background: float = 0.0, depth: int = 0,
          t_min: float = 0.02, t_max: float = 0.98, weighting: str = "sigma2", generator=None,
          log_every: int = 0, log=print):
    """Optimise a scene by SDS under ``prior``; returns (scene, history: one dict per logged step).

    >>> import gmcore as gm
    >>> from gmcore.models.base import DataInfo
    >>> from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
    >>> run = DDPM(DDPMConfig(channels=8, timesteps=20, class_cond=True),
    ...            DataInfo((1, 8, 8), 17, "digits", num_classes=10))
    >>> scene, history = dream(DiffusionPrior(run, label=3, guidance=5.0), steps=2, log_every=1, log=None)
    >>> len(history), scene(gm.tensor([0.0])).shape
    (2, gmcore.Size([1, 1, 8, 8]))
    """
    if steps < 1 or views < 1:
        raise ValueError(f"dream: steps and views must be positive, got {steps}, {views}")
    if not 0.0 <= azimuth_range <= 180.0:
        raise ValueError(f"dream: the azimuth range must be in [0, 180] degrees, got {azimuth_range}")
    model = prior.model
    dev = next(model.parameters()).device
    scene = make_scene(representation, model.data.shape, background=background, depth=depth,
                       generator=generator)
    scene.to(dev)
    if next(scene.parameters()).dtype != model._dtype:
        scene.to(model._dtype)
    sds = SDS(prior, t_min=t_min, t_max=t_max, weighting=weighting)
    opt = Adam(list(scene.parameters()), lr=lr)
    history, start = [], time.perf_counter()
    for step in range(1, steps + 1):
        u = gc.rand(views, generator=generator).cpu().numpy().astype(np.float64)
        az = (u * 2.0 - 1.0) * azimuth_range
        x = model.to_diffusion(scene(az))
        surrogate, logs = sds.loss(x, generator=generator)
        opt.zero_grad()
        (surrogate / views).backward()
        opt.step()
        if log_every and (step % log_every == 0 or step == steps):
            row = {"step": step, **logs, "sec": round(time.perf_counter() - start, 3)}
            history.append(row)
            if log is not None:
                log(json.dumps(row))
    return scene, history


def _strip(frames: np.ndarray, path, scale: int = 6) -> None:
    """The frames (N, C, H, W) in [0, 1] side by side, on grey separators (white ones would read
    as bright strokes beside dark-background views)."""
    from PIL import Image

    from ..plots import image_grid

    grid = image_grid(frames, nrow=len(frames), padding=1, pad_value=0.5)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = _io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _gif(frames: np.ndarray, path, scale: int = 8, ms: int = 120) -> None:
    """An animated GIF of frames (N, C, H, W) in [0, 1], there and back, each pixel enlarged."""
    from PIL import Image

    seq = list(frames) + list(frames[-2:0:-1])
    images = []
    for f in seq:
        a = (np.clip(f.transpose(1, 2, 0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        img = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
        images.append(img.resize((img.width * scale, img.height * scale), Image.NEAREST))
    buf = _io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=ms, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def save_outputs(out_dir, scene, azimuths, metrics: dict) -> dict:
    """Write ``views.png`` (the views at ``azimuths`` as a strip, left to right), ``views.gif``
    (them animated),
    ``scene.npz`` (the optimised parameters, float) and ``metrics.json``; returns the metrics
    with the file names added."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = render_views(scene, azimuths)
    _strip(frames, out / "views.png")
    _gif(frames, out / "views.gif")
    np.savez(out / "scene.npz", azimuths=np.asarray(azimuths),
             **{name: p.detach().cpu().numpy() for name, p in scene.named_parameters()})
    metrics = {**metrics, "views_png": "views.png", "views_gif": "views.gif", "scene": "scene.npz"}
    atomic_write_bytes(out / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
    return metrics
