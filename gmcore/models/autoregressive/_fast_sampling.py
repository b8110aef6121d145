"""Fast pixel-by-pixel sampling for PixelCNN and Gated PixelCNN (Ramachandran, Le Paine,
Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang, 2017, "Fast
Generation for Convolutional Autoregressive Models").

The naive sampler (:func:`~._pixel_layers.sample_pixels`) reruns the whole network on the
image so far for every new pixel (every new colour for RGB): H * W full forward passes. But in
a masked network the activation of a layer at position ``p`` depends only on the pixels before
``p`` (and on the permitted colours of ``p``), so once those are drawn it never changes. Here
every layer keeps its input in a cache, and a new pixel costs one position of every layer:

* a k x k masked convolution at ``(i, j)`` is one matrix product of the masked weight (only
  the kernel rows up to the centre: the rest is masked out) with the cached patch around
  ``(i, j)``; a 1x1 convolution is a matrix product with the new position's features;
* the Gated PixelCNN's vertical stack sees only rows above, so it is computed once per row for
  the whole row (all layers), and the horizontal stack once per pixel from the cached current
  row; for RGB the horizontal stack carries the current pixel's colours (colour groups), so it
  and the output head are recomputed at the one position per colour;
* the PixelCNN with RGB colour groups recomputes the new position of every layer once per
  colour (group g of every layer sees colours < g of the current pixel).

This is the paper's cache queues with the whole image as the queue (the images are small).
The work per pixel is O(layers) instead of O(layers * H * W), and it runs on the raw arrays of
the device (NumPy or CuPy) rather than through the autograd engine: sampling needs no graph.

Same samples: both samplers make the same categorical draws (same shapes, same order, the same
``generator``) from logits that agree to float rounding (the fast path sums each convolution in
a different order than the convolution kernels), so the samples are the same unless a uniform
draw falls within rounding (~1e-7 in float32) of a boundary of the cumulative distribution;
``tests/models/test_fast_pixel_sampling.py`` checks equality of samples and logits.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ... import backend
from ... import creation as gc
from ...autograd import no_grad
from ...distributions import Categorical
from ...progress import Bar
from ...tensor import Tensor
from ._pixel_layers import eval_mode

__all__ = ["PixelSampleOptions", "check_sampler", "fast_sample_pixelcnn", "fast_sample_gated_pixelcnn"]

SAMPLERS = ("fast", "naive")


@dataclass
class PixelSampleOptions:
    sampler: str = field(default="fast", metadata={
        "help": "fast: cache every layer's activations and compute only the new pixel's position "
                "(Ramachandran et al. 2017); naive: rerun the whole network per pixel (same samples)",
        "choices": list(SAMPLERS)})


def check_sampler(model: str, sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"{model}.sample: sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    return sampler


class _Tap:
    """A convolution evaluated at single positions: ``patch (n, rows, kw, C) @ w + b``.

    Patches are channels-last (the caches are, so a patch is a copy of ``rows * kw``
    contiguous runs); ``rows`` keeps the first kernel rows only (a centred mask zeroes the rows
    below the centre); the weight is the module's masked weight when it has a mask."""

    def __init__(self, conv, xp, rows=None):
        w = conv.weight.data
        mask = getattr(conv, "mask", None)
        if mask is not None:
            w = w * xp.asarray(mask, dtype=w.dtype)
        rows = w.shape[2] if rows is None else rows
        self.kernel = (rows, w.shape[3])
        self.w = xp.ascontiguousarray(w[:, :, :rows].transpose(2, 3, 1, 0).reshape(-1, w.shape[0]))
        self.b = None if conv.bias is None else conv.bias.data

    def __call__(self, patch):
        out = patch.reshape(patch.shape[0], -1) @ self.w
        return out if self.b is None else out + self.b


def _relu(xp, a):
    return xp.maximum(a, 0)


def _sigmoid(xp, a):
    return 0.5 * (xp.tanh(0.5 * a) + 1.0)     # no overflow for large |a|


def _draw(logits, c, generator, top):
    """The naive sampler's draw: logits (n, C, L) -> values (n, C), or (n,) for colour ``c``."""
    t = Tensor(logits if c is None else logits[:, c])
    return Categorical(logits=t).sample(generator=generator).float().data / top


def _on_the_models_device(sampler):
    """Run ``sampler(model, ...)`` without a graph, with the model's device current (CuPy
    allocates the caches there)."""
    @functools.wraps(sampler)
    def run(model, *args):
        with no_grad(), backend.device_context(next(model.parameters()).device):
            return sampler(model, *args)
    return run


def _pixel_loop(n, shape, device, channelwise, new_row, new_pixel, colour_logits, generator, top):
    """Raster order over pixels (and colours), drawing each from ``colour_logits(x, i, j)``;
    ``new_row(x, i)`` / ``new_pixel(x, i, j)`` update the caches before a row / a pixel."""
    C, H, W = (int(s) for s in shape)
    x = gc.zeros(n, C, H, W, device=device)
    bar = Bar(H * W, "pixels")   # drawn only under gmcore.progress.show_progress()
    for i in range(H):
        new_row(x, i)
        for j in range(W):
            new_pixel(x, i, j)
            for c in (range(C) if channelwise else (None,)):
                vals = _draw(colour_logits(x, i, j), c, generator, top)
                if c is None:
                    x.data[:, :, i, j] = vals.reshape(n, C)
                else:
                    x.data[:, c, i, j] = vals.reshape(n)
            bar.update(i * W + j + 1)
    bar.close()
    return x


@_on_the_models_device
def fast_sample_pixelcnn(model, n: int, generator=None) -> Tensor:
    """``n`` samples of a :class:`~.pixelcnn.PixelCNN` (in eval mode: dropout is the identity),
    the same as its naive sampler draws with the same ``generator``.

    >>> import gmcore as gm
    >>> from gmcore.models.autoregressive import PixelCNN
    >>> from gmcore.models.base import DataInfo
    >>> m = PixelCNN(PixelCNN.Config(channels=8, blocks=1, out_hidden=8), DataInfo((1, 4, 4), 5))
    >>> naive = m.sample(3, generator=gm.Generator().manual_seed(0), sampler="naive")
    >>> fast = fast_sample_pixelcnn(m, 3, gm.Generator().manual_seed(0))
    >>> fast.shape, bool((fast == naive).all())
    (gmcore.Size([3, 1, 4, 4]), True)
    """
    C, H, W = (int(s) for s in model.data.shape)
    device = next(model.parameters()).device
    xp = backend.xp_for(device)
    dtype = model.inp.weight.data.dtype
    channelwise = model.groups == 3

    def tap(conv):
        kh, kw = conv.kernel_size
        if conv.stride != (1, 1) or conv.dilation != (1, 1) or conv.padding is not None or kh % 2 == 0:
            raise ValueError("fast pixel sampling needs stride-1, undilated, same-padded masked "
                             f"convolutions with odd kernels; {conv} is not one")
        return _Tap(conv, xp, rows=kh // 2 + 1)

    def cache(conv, channels):
        """Zero-padded input buffer (channels last) of a k x k masked conv (rows above,
        columns both sides)."""
        kh, kw = conv.kernel_size
        return xp.zeros((n, H + kh // 2, W + 2 * (kw // 2), channels), dtype=dtype)

    inp = tap(model.inp)
    xbuf = cache(model.inp, C)
    blocks = [(tap(b.reduce), tap(b.conv), tap(b.expand), cache(b.conv, b.conv.in_channels))
              for b in model.blocks]
    out1, out2 = tap(model.out1), tap(model.out2)

    def at(buf, t, i, j):
        return buf[:, i:i + t.kernel[0], j:j + t.kernel[1]]

    def nothing(x, i):
        pass

    def put(x, i, j):
        # xs as the naive forward computes it (float32 images), then in the weights' dtype
        xbuf[:, i + inp.kernel[0] - 1, j + inp.kernel[1] // 2] = \
            (x.data[:, :, i, j] * 2.0 - 1.0).astype(dtype)

    def new_pixel(x, i, j):
        if i or j:                                              # the pixel just drawn
            put(x, *divmod(i * W + j - 1, W))

    def logits(x, i, j):
        put(x, i, j)       # the colours drawn so far (RGB); the mask-A input layer needs no more
        h = inp(at(xbuf, inp, i, j))
        for reduce, conv, expand, buf in blocks:
            r = _relu(xp, reduce(_relu(xp, h)))
            buf[:, i + conv.kernel[0] - 1, j + conv.kernel[1] // 2] = r
            h = h + expand(_relu(xp, conv(at(buf, conv, i, j))))
        out = out2(_relu(xp, out1(_relu(xp, h))))
        return out.reshape(n, C, model.levels)

    with eval_mode(model):
        return _pixel_loop(n, model.data.shape, device, channelwise, nothing, new_pixel, logits,
                           generator, model.levels - 1)


@_on_the_models_device
def fast_sample_gated_pixelcnn(model, n: int, generator=None, labels: Tensor | None = None) -> Tensor:
    """``n`` samples of a :class:`~.gated_pixelcnn.GatedPixelCNN` (``labels`` (n,) checked by
    the caller for a conditional model), the same as its naive sampler draws with the same
    ``generator``.

    >>> import gmcore as gm
    >>> from gmcore.models.autoregressive import GatedPixelCNN
    >>> from gmcore.models.base import DataInfo
    >>> m = GatedPixelCNN(GatedPixelCNN.Config(channels=4, layers=2, out_hidden=6),
    ...                   DataInfo((1, 4, 4), 5, num_classes=3))
    >>> y = gm.tensor([0, 2, 1])
    >>> naive = m.sample(3, generator=gm.Generator().manual_seed(0), labels=y, sampler="naive")
    >>> fast = fast_sample_gated_pixelcnn(m, 3, gm.Generator().manual_seed(0), y)
    >>> bool((fast == naive).all())
    True
    """
    C, H, W = (int(s) for s in model.data.shape)
    device = next(model.parameters()).device
    xp = backend.xp_for(device)
    dtype = model.out1.weight.data.dtype
    L = len(model.stack)
    conds = [None] * L
    if model.num_classes:
        bias = model.label_bias(labels).data                     # (n, layers * 4p)
        step = bias.shape[1] // L
        conds = [(bias[:, k * step:k * step + step // 2], bias[:, k * step + step // 2:(k + 1) * step])
                 for k in range(L)]

    layers = []
    for layer in model.stack:
        (vh, vw), (_, hw) = layer.vconv.kernel_size, layer.hconv.kernel_size
        if vw % 2 == 0:
            raise ValueError(f"fast pixel sampling needs an odd kernel (vertical kernel {vh}x{vw})")
        cin = layer.vconv.in_channels
        layers.append(dict(
            v=_Tap(layer.vconv, xp), h=_Tap(layer.hconv, xp), link=_Tap(layer.link, xp),
            hout=_Tap(layer.hout, xp), vw=vw,
            # channels last: the vertical input rows (vh - 1 zero rows on top, (vw - 1) // 2
            # zero columns each side) and the current row of the horizontal input (hw - 1 zero
            # columns on the left, then column j at hw - 1 + j; for a grey image's first layer,
            # whose input is the image shifted right, column j - 1 at hw + j - 1)
            vin=xp.zeros((n, H + vh - 1, W + vw - 1, cin), dtype=dtype),
            hin=xp.zeros((n, 1, W + hw, cin), dtype=dtype),
            vpre=None))
    out1, out2 = _Tap(model.out1, xp), _Tap(model.out2, xp)
    rgb = C == 3
    hidden = [None]

    def gate(a):
        f, g = xp.split(a, 2, axis=1)
        return xp.tanh(f) * _sigmoid(xp, g)

    def new_row(x, i):
        """The vertical stack's row i (all layers, all columns): it sees rows < i only."""
        first = layers[0]
        if i > 0:                                               # down_shift: row i sees image row i - 1
            c0 = (first["vw"] - 1) // 2
            first["vin"][:, i + first["v"].kernel[0] - 1, c0:c0 + W] = \
                (x.data[:, :, i - 1] * 2.0 - 1.0).astype(dtype).transpose(0, 2, 1)
        for k, lay in enumerate(layers):
            kh, kw = lay["v"].kernel
            win = lay["vin"][:, i:i + kh]                        # (n, kh, W + kw - 1, C)
            cols = xp.stack([win[:, :, b:b + W] for b in range(kw)], axis=3)   # (n, kh, W, kw, C)
            patches = cols.transpose(0, 2, 1, 3, 4).reshape(n * W, kh, kw, -1)
            vpre = lay["v"](patches)                             # (n * W, 2p)
            lay["vpre"] = vpre.reshape(n, W, -1)
            v = vpre.reshape(n, W, -1)
            if conds[k] is not None:
                v = v + conds[k][0][:, None]
            if k + 1 < L:
                nxt = layers[k + 1]
                r = i + nxt["v"].kernel[0] - 1
                c0 = (nxt["vw"] - 1) // 2
                nxt["vin"][:, r, c0:c0 + W] = gate(v.reshape(n * W, -1)).reshape(n, W, -1)

    def horizontal(x, i, j):
        """The horizontal stack and the head's first layer at (i, j): it sees row i left of j
        (grey: the image shifted right) and, for RGB, the colours of (i, j) drawn so far (the
        mask-A centre tap ignores the rest)."""
        first = layers[0]
        hw = first["h"].kernel[1]
        if rgb:                          # unshifted: pixels j - hw + 1 .. j (j: its colours so far)
            lo = max(0, j - hw + 1)
            first["hin"][:, 0, hw - 1 + lo:hw + j] = \
                (x.data[:, :, i, lo:j + 1] * 2.0 - 1.0).astype(dtype).transpose(0, 2, 1)
        elif j > 0:
            first["hin"][:, 0, hw + j - 1] = (x.data[:, :, i, j - 1] * 2.0 - 1.0).astype(dtype)
        else:
            first["hin"][...] = 0.0                              # a new row
        h = None
        for k, lay in enumerate(layers):
            hw = lay["h"].kernel[1]
            if k:
                lay["hin"][:, 0, hw - 1 + j] = h
            h_pre = lay["h"](lay["hin"][:, :, j:j + hw]) + lay["link"](lay["vpre"][:, j])
            if conds[k] is not None:
                h_pre = h_pre + conds[k][1]
            h_out = lay["hout"](gate(h_pre))
            h = h_out if k == 0 else h + h_out
        hidden[0] = out1(_relu(xp, h))

    def new_pixel(x, i, j):
        if not rgb:                      # grey: pixel (i, j) does not enter its own stack
            horizontal(x, i, j)

    def logits(x, i, j):
        if rgb:                          # RGB: once per colour, with the colours drawn so far
            horizontal(x, i, j)
        return out2(_relu(xp, hidden[0])).reshape(n, C, model.levels)

    return _pixel_loop(n, model.data.shape, device, C == 3, new_row, new_pixel, logits,
                       generator, model.levels - 1)
