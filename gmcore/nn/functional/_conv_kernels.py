"""Reference convolution kernels on raw arrays (NumPy or CuPy through ``xp``).

Three linear maps close the set of derivatives of a 2-D convolution ``y = C_w(x)``:

* ``conv2d_raw``         ``y = C_w(x)``           im2col + one GEMM per group
* ``conv_transpose_raw`` ``z = C_w^T(g)``         one GEMM per group + col2im (scatter-add of taps)
* ``conv_weight_raw``    ``gw = d<C_w(x), gy>/dw`` im2col (or the forward's cached columns)
                                                   + one GEMM per group

``geom`` is ``(stride, pads, dilation, groups)`` with ``stride = (sh, sw)``,
``pads = (top, bottom, left, right)`` (asymmetric for ``padding='same'``), ``dilation = (dh, dw)``.
The weight has the convolution layout ``(O, C/groups, kh, kw)``; PyTorch's transposed-conv
weight ``(C_in, C_out/groups, kh, kw)`` is exactly that layout for the adjoint convolution.

The column tensor is laid out ``(C, kh, kw, N, Ho, Wo)``, so the batch joins the GEMM's long
side: one ``(O/g, K) @ (K, N*Ho*Wo)`` product per group, efficient for small images too.
It is built with one strided slice copy per kernel tap (kh*kw copies), which works unchanged
on NumPy and CuPy. Measured on a 2-core CPU (32x64x32x32, 3x3) against an ``(N, C, kh, kw,
Ho, Wo)`` layout with per-image batched GEMMs (no output transpose) and against per-tap
shifted GEMMs without im2col: this layout was as fast or faster in each step (the output
transpose costs under 0.5 ms; the batched GEMMs and the copies into the other layout are
slower), so it stays. Both GEMMs run near the BLAS peak; im2col is the remaining overhead.
"""
import numpy as np

from ...backend import xp_of


def _tap_kernel(x, groups, stride):
    """The tap-convolution implementation serving this convolution, or None for im2col + GEMM.

    ``groups == 1`` convolutions can run on the ``masked_conv`` family's kernels with every tap
    active (dispatch op ``masked_conv/conv2d``). On the CPU, cpp's direct AVX-512 kernels take
    float32 at stride 1 where the CPU has them (faster than im2col + OpenBLAS); on CUDA the
    im2col + cuBLAS path is registered first until a GPU measurement shows the implicit GEMM
    faster; select it with ``GMCORE_KERNELS=masked_conv=triton`` or ``dispatch.set_preference``.
    ``GMCORE_KERNELS=masked_conv=reference`` keeps im2col on both.
    """
    if groups != 1 or x.dtype not in (np.float32, np.float64):
        return None
    from ... import dispatch
    cpu = isinstance(x, np.ndarray)
    try:
        name, impl = dispatch.choose("masked_conv", "conv2d", "cpu" if cpu else "cuda")
    except dispatch.KernelUnavailable:  # masked_conv pinned to one without this op (numba)
        return None
    if name == "reference":
        return None
    if cpu and not impl.direct_applies(x.dtype, (stride, (0, 0), (1, 1))):
        return None
    return impl


def _tap_geometry(geom, kh, kw):
    from ...functional._tap_conv import all_taps
    (sh, sw), (pt, _, pl, _), (dh, dw), _ = geom
    return all_taps(kh, kw), ((sh, sw), (pt, pl), (dh, dw))


def out_size(size, k, s, pad_total, d):
    """PyTorch's convolution output size along one dimension."""
    return (size + pad_total - d * (k - 1) - 1) // s + 1


def _im2col(x, kh, kw, geom, out_hw):
    """Columns ``(C, kh, kw, N, Ho, Wo)`` of the padded input; taps that fall outside are 0."""
    xp = xp_of(x)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), _ = geom
    n, c, h, w = x.shape
    ho, wo = out_hw
    # rows/cols of the padded input the taps reach; pad (or crop) the bottom/right to exactly that
    need_h = (ho - 1) * sh + dh * (kh - 1) + 1
    need_w = (wo - 1) * sw + dw * (kw - 1) + 1
    xt = x.transpose(1, 0, 2, 3)  # (C, N, H, W) view: the copies below do the transpose
    if pt or pl or need_h > pt + h or need_w > pl + w:
        # zero padding by hand: xp.pad's generic machinery costs more than this one copy, and
        # building the padded copy already (C, N)-major makes the tap copies read in order
        # the part of x the taps reach (none when a big stride only samples the padding)
        hv, wv = max(0, min(h, need_h - pt)), max(0, min(w, need_w - pl))
        xt_pad = xp.zeros((c, n, need_h, need_w), dtype=x.dtype)
        xt_pad[:, :, pt:pt + hv, pl:pl + wv] = xt[:, :, :hv, :wv]
        xt = xt_pad
    cols = xp.empty((c, kh, kw, n, ho, wo), dtype=x.dtype)
    for i in range(kh):
        hi = i * dh
        for j in range(kw):
            wj = j * dw
            cols[:, i, j] = xt[:, :, hi:hi + (ho - 1) * sh + 1:sh, wj:wj + (wo - 1) * sw + 1:sw]
    return cols


def _columns(x, kh, kw, geom, out_hw):
    """The GEMM operand ``(groups, K, N*Ho*Wo)`` of the convolution of ``x``."""
    (sh, sw), pads, _, groups = geom
    n, c, h, wd = x.shape
    ho, wo = out_hw
    k = c // groups * kh * kw
    if kh == kw == 1 and pads == (0, 0, 0, 0) and (sh, sw) == (1, 1) and (ho, wo) == (h, wd):
        # 1x1: no im2col needed (ascontiguousarray: an expanded x must not reach BLAS strided)
        return xp_of(x).ascontiguousarray(x.transpose(1, 0, 2, 3)).reshape(groups, k, n * ho * wo)
    return _im2col(x, kh, kw, geom, out_hw).reshape(groups, k, n * ho * wo)


def conv2d_raw(x, w, geom, out_hw=None, return_cols=False):
    """``y[n, o] = sum_{c, i, j} w[o, c, i, j] * x_pad[n, g*C/g + c, y*s + i*d, x*s + j*d]``.

    With ``return_cols`` it returns ``(y, cols)``: the column array, which ``conv_weight_raw``
    accepts in place of recomputing it from ``x``.
    """
    xp = xp_of(x)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), groups = geom
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if out_hw is None:
        out_hw = (out_size(h, kh, sh, pt + pb, dh), out_size(wd, kw, sw, pl + pr, dw))
    tap = _tap_kernel(x, groups, geom[0])
    if tap is not None:
        y = tap.tap_conv2d_forward(x, w, None, *_tap_geometry(geom, kh, kw), tuple(out_hw))
        return (y, None) if return_cols else y
    ho, wo = out_hw
    og, k = o // groups, cg * kh * kw
    cols = _columns(x, kh, kw, geom, out_hw)
    y = xp.matmul(w.reshape(groups, og, k), cols)  # (g, O/g, N*L)
    y = xp.ascontiguousarray(y.reshape(o, n, ho, wo).transpose(1, 0, 2, 3))
    return (y, cols) if return_cols else y


def conv_transpose_raw(g, w, geom, out_hw):
    """The adjoint of ``conv2d_raw`` w.r.t. its input: ``(N, O, Ho, Wo) -> (N, C, H, W)``.

    ``out_hw = (H, W)`` is the size of the convolution's input, which the output size formula
    alone does not fix (stride > 1 drops trailing rows; ``output_padding`` picks them).
    """
    xp = xp_of(g)
    (sh, sw), (pt, pb, pl, pr), (dh, dw), groups = geom
    n, o, ho, wo = g.shape
    _, cg, kh, kw = w.shape
    h, wd = out_hw
    tap = _tap_kernel(g, groups, geom[0])
    if tap is not None:
        g = xp.ascontiguousarray(g)  # the gradient of a sum arrives broadcast
        return tap.tap_conv2d_input_grad(g, w, *_tap_geometry(geom, kh, kw), (h, wd))
    og, k, c = o // groups, cg * kh * kw, cg * groups
    # a broadcast g (the gradient of a sum) must become a real array before BLAS sees it
    gt = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, og, n * ho * wo)
    cols = xp.matmul(w.reshape(groups, og, k).transpose(0, 2, 1), gt)  # (g, K, N*L)
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    # scatter-add every tap into a buffer covering the padded input, then crop the padding
    hb = max((ho - 1) * sh + dh * (kh - 1) + 1, pt + h)
    wb = max((wo - 1) * sw + dw * (kw - 1) + 1, pl + wd)
    buf = xp.zeros((c, n, hb, wb), dtype=cols.dtype)
    for i in range(kh):
        hi = i * dh
        for j in range(kw):
            wj = j * dw
            # one tap's slice has no repeated positions, so a plain += is a correct scatter-add
            buf[:, :, hi:hi + (ho - 1) * sh + 1:sh, wj:wj + (wo - 1) * sw + 1:sw] += cols[:, i, j]
    return xp.ascontiguousarray(buf[:, :, pt:pt + h, pl:pl + wd].transpose(1, 0, 2, 3))


def conv_weight_raw(x, gy, geom, w_shape, cols=None):
    """``gw[o, c, i, j] = sum_{n, y, x} gy[n, o, y, x] * x_pad[n, c', y*s + i*d, x*s + j*d]``.

    ``cols`` is the column array of ``x`` that ``conv2d_raw(..., return_cols=True)`` built for
    the same geometry; without it the columns are recomputed (same values: they are copies).
    """
    xp = xp_of(x)
    groups = geom[3]
    o, cg, kh, kw = w_shape
    n, _, ho, wo = gy.shape
    og = o // groups
    tap = _tap_kernel(x, groups, geom[0])
    if tap is not None:
        return tap.tap_conv2d_weight_grad(xp.ascontiguousarray(x), xp.ascontiguousarray(gy),
                                          *_tap_geometry(geom, kh, kw), (kh, kw))
    if cols is None:
        cols = _columns(x, kh, kw, geom, (ho, wo))
    # (g, O/g, N*L); a broadcast gy (the gradient of a sum) becomes a real array here
    gt = xp.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(groups, og, n * ho * wo)
    # the GEMM's operand order as before the cache: results stay bit-identical to the old
    # kernel ((K, N*L) @ (N*L, O/g) measured no faster)
    gw = xp.matmul(gt, cols.transpose(0, 2, 1))  # (g, O/g, K)
    return gw.reshape(w_shape)
