"""What ``gmcore selftest`` checks per kernel family: one :class:`Spec` per (family, op).

A spec names the dispatch ops it exercises, builds its cases (random inputs and edge cases,
sized to run in milliseconds) and calls the public op on Tensors. :mod:`gmcore.selftest.checks`
runs every available implementation through it and compares values and gradients with the
float64 ``reference`` on the CPU. Tolerances follow tests/kernels/test_<family>.py: ``tol32``
is the relative tolerance of float32 (the absolute one is ``tol32`` times the largest magnitude
of the reference array, at least 1); float64 uses ``TOL64``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

TOL64 = 1e-9


@dataclass
class Case:
    """One input set: ``arrays`` by argument name; ``grad`` names the arrays to differentiate.

    Floating arrays are cast to the dtype under test; integer arrays (timesteps, indices) keep
    theirs.
    """

    name: str
    arrays: dict[str, np.ndarray]
    grad: tuple[str, ...] = ()


@dataclass
class Spec:
    family: str
    label: str  # what the row calls the op
    ops: tuple[str, ...]  # the dispatch ops the call runs (an implementation must have them all)
    build: Callable[[np.random.Generator], list[Case]]
    call: Callable[[dict], tuple]  # Tensors by name -> tuple of output Tensors
    tol32: float = 5e-5
    exact: tuple[int, ...] = field(default=())  # outputs compared exactly (integer results)


def _F():
    import gmcore.functional as F

    return F


def _schedule(kind: str):
    from gmcore.schedules import NoiseSchedule

    return NoiseSchedule.linear(50, 1e-3, 0.05) if kind == "linear" else NoiseSchedule.cosine(100)


# ---- logsumexp -------------------------------------------------------------------------------

def _lse_cases(rng):
    big = rng.standard_normal((5, 9)) * 3
    big[0] += 80.0  # exp overflows float32 without the max shift
    big[1] -= 300.0
    big[2] = 1.5  # a constant row: the softmax is exactly uniform
    return [Case("random", {"x": rng.standard_normal((7, 33)) * 2}, ("x",)),
            Case("edge", {"x": big}, ("x",))]


# ---- dlml ------------------------------------------------------------------------------------

def _dlml_grid(rng, shape, nb):
    i = rng.integers(0, nb, size=shape)
    r = rng.random(shape)  # a good share of both edge bins (the CDF tails)
    i = np.where(r < 0.1, 0, np.where(r > 0.9, nb - 1, i))
    return -1.0 + 2.0 * i / (nb - 1)


def _dlml_cases(rng):
    sharp = rng.standard_normal((2, 3 * 4, 3, 4))  # K = 4 gray components: 3 params each
    sharp[:, 4:] += np.where(rng.random((2, 8, 3, 4)) < 0.3, -4.0, 0.0)  # tiny scales: tails
    cases = []
    for name, nb, x_shape, p in (
            ("rgb-256", 256, (2, 3, 4, 5), rng.standard_normal((2, 10 * 3, 4, 5))),
            ("gray-sharp", 256, (2, 1, 3, 4), sharp * 1.5),
            ("16bit", 65536, (2, 1, 2, 7), rng.standard_normal((2, 3 * 3, 2, 7))),
            ("2-bins", 2, (3, 1, 2, 3), rng.standard_normal((3, 3 * 2, 2, 3)) * 3)):
        cases.append(Case(name, {"x": _dlml_grid(rng, x_shape, nb), "p": p, "nb": np.array(nb)}, ("p",)))
    return cases


def _dlml_call(t):
    return (_F().discretized_logistic_mixture_nll(t["x"], t["p"], num_bins=int(t["nb"].item()),
                                                  reduction="none"),)


# ---- vq --------------------------------------------------------------------------------------

def _vq_nearest_cases(rng):
    codes = rng.standard_normal((37, 6))
    z = codes[rng.integers(0, 37, 150)] + 0.05 * rng.standard_normal((150, 6))  # no near ties
    dup = codes.copy()
    dup[20] = dup[3]  # an exact tie: the lower index wins
    zd = np.concatenate([dup[[3, 20, 5]], z[:20]])
    return [Case("random", {"z": z, "codebook": codes}, ("codebook",)),
            Case("tied-codes", {"z": zd, "codebook": dup}, ("codebook",))]


def _vq_ema_cases(rng):
    z = rng.standard_normal((130, 5))
    return [Case("random", {"z": z, "indices": rng.integers(0, 11, 130)}),
            Case("one-code", {"z": z[:17], "indices": np.full(17, 4, np.int64)})]


def _vq_ema_call(t):
    return _F().vq_ema_stats(t["z"], t["indices"], 11)


# ---- coupling --------------------------------------------------------------------------------

def _coupling_cases(rng):
    x, r, b = (rng.standard_normal((4, 3, 5)) for _ in range(3))
    sat = r * 15.0  # sigmoid(r + 2) saturates at both ends
    return [Case(f"{fn}{'-inverse' if inv else ''}", {"x": x, "r": (sat if fn == "sigmoid" else r),
                                                       "b": b, "fn": np.array(i), "inv": np.array(inv)},
                 ("x", "r", "b"))
            for i, (fn, inv) in enumerate([("exp", False), ("sigmoid", True), ("tanh", False)])]


def _coupling_call(t):
    fn = ("exp", "sigmoid", "tanh")[int(t["fn"].item())]
    return _F().affine_coupling(t["x"], t["r"], t["b"], scale_fn=fn, inverse=bool(t["inv"].item()))


# ---- spline ----------------------------------------------------------------------------------

def _spline_cases(rng):
    x = np.concatenate([rng.uniform(-2.9, 2.9, 40), [-3.0, 3.0, -4.5, 6.0]])  # knots and tails
    w, h = (rng.standard_normal((44, 6)) * 1.5 for _ in range(2))
    d = rng.standard_normal((44, 5))
    return [Case(f"{'inverse' if inv else 'forward'}",
                 {"x": x, "w": w, "h": h, "d": d, "inv": np.array(inv)}, ("x", "w", "h", "d"))
            for inv in (False, True)]


def _spline_call(t):
    import gmcore.nn.functional as NF

    return NF.rational_quadratic_spline(t["x"], t["w"], t["h"], t["d"],
                                        inverse=bool(t["inv"].item()))


# ---- diffusion -------------------------------------------------------------------------------

def _diff_arrays(rng, channels=3, ts=(0, 17, 49)):
    b = len(ts)
    x0 = np.clip(rng.standard_normal((b, channels, 4, 5)) * 0.7, -1, 1)
    return {"x0": x0, "noise": rng.standard_normal(x0.shape), "t": np.array(ts, np.int64)}


def _diff_cases(rng, *, out2=False, grad=()):
    cases = []
    for kind, ts in (("linear", (0, 17, 49)), ("cosine", (0, 1, 99))):  # cosine: abar -> 0 at T-1
        a = _diff_arrays(rng, ts=ts)
        a["m"] = rng.standard_normal((len(ts), 6 if out2 else 3, 4, 5))
        a["sched"] = np.array(0 if kind == "linear" else 1)
        cases.append(Case(kind, a, grad))
    return cases


def _sched(t):
    return _schedule("linear" if int(t["sched"].item()) == 0 else "cosine")


def _q_sample(t):
    return (_F().q_sample(t["x0"], t["t"], t["noise"], _sched(t)),)


def _predict_x0(t):
    return (_F().predict_x0(t["x0"], t["m"], t["t"], _sched(t), clip_x0=True),)


def _ddpm(t):
    s = _sched(t)
    return (_F().ddpm_step(t["x0"], t["m"][:, :3], t["t"], t["noise"], s, "fixed_small"),
            _F().ddpm_step(t["x0"], t["m"][:, :3], t["t"], t["noise"], s, "fixed_large"),
            _F().ddpm_step(t["x0"], t["m"], t["t"], t["noise"], s, "learned_range"))


def _ddim(t):
    s = _sched(t)
    prev = t["t"] - 1  # -1: the final step to x0
    return (_F().ddim_step(t["x0"], t["m"], t["t"], prev, 0.0, None, s),
            _F().ddim_step(t["x0"], t["m"], t["t"], prev, 0.7, t["noise"], s, clip_x0=False))


def _eps_loss(t):
    return (_F().eps_mse_loss(t["m"], t["noise"], t["t"], reduction="none"),)


def _hybrid(t):
    s = _sched(t)
    xt = _F().q_sample(t["x0"].detach(), t["t"], t["noise"].detach(), s)
    return (_F().hybrid_loss(t["m"], t["x0"], xt, t["noise"], t["t"], s, reduction="none"),)


# ---- convolutions ----------------------------------------------------------------------------

def _conv_cases(rng):
    return [Case("random", {"x": rng.standard_normal((2, 3, 7, 6)), "w": rng.standard_normal((6, 3, 3, 3)) * 0.3,
                            "b": rng.standard_normal(6)}, ("x", "w", "b")),
            Case("5x5", {"x": rng.standard_normal((1, 3, 5, 9)), "w": rng.standard_normal((3, 3, 5, 5)) * 0.2,
                         "b": rng.standard_normal(3)}, ("x", "w", "b"))]


def _masked(t):
    F = _F()
    return (F.masked_conv2d(t["x"], t["w"], t["b"], mask_type="A", groups_rgb=3),
            F.masked_conv2d(t["x"], t["w"], t["b"], mask_type="B"))


def _shifted(t):
    F = _F()
    w = t["w"][:, :, :2, :]  # (KH, KW) = (2, 3): PixelCNN++'s down-shifted kernel
    return (F.down_shifted_conv2d(t["x"], w, t["b"]),
            F.down_right_shifted_conv2d(t["x"], t["w"][:, :, :2, :2], t["b"]))


def _plain_conv(t):
    import gmcore.nn.functional as NF

    return (NF.conv2d(t["x"], t["w"], t["b"], padding=1),)


def _causal_cases(rng):
    return [Case("dilation-2", {"x": rng.standard_normal((2, 4, 19)), "w": rng.standard_normal((5, 4, 3)) * 0.4,
                                "b": rng.standard_normal(5), "d": np.array(2)}, ("x", "w", "b")),
            Case("dilation-8", {"x": rng.standard_normal((1, 3, 12)), "w": rng.standard_normal((2, 3, 2)),
                                "b": rng.standard_normal(2), "d": np.array(8)}, ("x", "w", "b"))]


def _causal(t):
    return (_F().causal_conv1d(t["x"], t["w"], t["b"], dilation=int(t["d"].item())),)


def _wavenet_cases(rng):
    n, c, g, s, length = 2, 4, 3, 5, 11
    a = {"x": rng.standard_normal((n, c, length)), "cw": rng.standard_normal((2 * g, c, 2)) * 0.5,
         "cb": rng.standard_normal(2 * g), "rw": rng.standard_normal((c, g)) * 0.5, "rb": rng.standard_normal(c),
         "sw": rng.standard_normal((s, g)) * 0.5, "sb": rng.standard_normal(s)}
    names = tuple(a)
    cond = dict(a, cond=rng.standard_normal((n, 2 * g, 1)) * 3)  # saturating gates, broadcast in time
    return [Case("random", a, names), Case("global-cond", cond, names + ("cond",))]


def _wavenet(t):
    return _F().wavenet_residual_block(t["x"], t["cw"], t["cb"], t["rw"], t["rb"], t["sw"], t["sb"],
                                       dilation=2, cond=t.get("cond"))


# ---- softmax / cross_entropy / embedding -----------------------------------------------------

def _softmax_cases(rng):
    big = rng.standard_normal((6, 33)) * 3
    big[0] += 80.0  # exp overflows float32 without the max shift
    big[1, ::2] = -np.inf  # exact zeros of the softmax
    return [Case("rows", {"x": big}, ("x",)),
            Case("middle-dim", {"x": rng.standard_normal((3, 7, 5)) * 2}, ("x",))]


def _softmax_call(t):
    dim = 1 if t["x"].ndim == 3 else -1
    x = t["x"]
    return (_F().softmax(x, dim), _F().log_softmax(x, dim))


def _ce_cases(rng):
    x = rng.standard_normal((9, 11)) * 3
    target = rng.integers(0, 11, 9)
    target[[2, 5]] = -100  # ignored
    xs = rng.standard_normal((4, 6, 3))
    return [Case("rows", {"x": x, "target": target, "weight": rng.uniform(0.5, 2.0, 11)}, ("x",)),
            Case("spatial", {"x": xs, "target": rng.integers(0, 6, (4, 3)),
                             "weight": np.ones(6)}, ("x",))]


def _ce_call(t):
    import gmcore.nn.functional as NF

    return (NF.cross_entropy(t["x"], t["target"], weight=t["weight"], label_smoothing=0.1),
            NF.cross_entropy(t["x"], t["target"], reduction="none"))


def _embedding_cases(rng):
    idx = rng.integers(0, 13, (5, 7))  # repeated rows
    return [Case("repeats", {"idx": idx, "w": rng.standard_normal((13, 6))}, ("w",))]


def _embedding_call(t):
    return (_F().embedding(t["idx"], t["w"], padding_idx=3) * 1.5,)


# ---- activation ------------------------------------------------------------------------------

def _activation_cases(rng):
    edge = np.array([0.0, 1e-8, -1e-8, 5.0, -5.0, 25.0, -25.0, 90.0, -90.0, 1e4, -1e4])
    return [Case("random", {"x": rng.standard_normal((5, 9, 7)) * 3}, ("x",)),
            Case("edge", {"x": edge}, ("x",))]


def _activation_call(t):
    F = _F()
    x = t["x"]
    return (F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x), F.elu(x, 0.7),
            F.leaky_relu(x, 0.2), F.softplus(x, beta=2.0, threshold=10.0), F.mish(x))


def _concat_elu_cases(rng):
    return [Case("random", {"x": rng.standard_normal((3, 5, 4, 7)) * 3}, ("x",))]


def _concat_elu_call(t):
    import gmcore.nn.functional as NF

    return (NF.concat_elu(t["x"]),)


# ---- attention -------------------------------------------------------------------------------

def _attention_cases(rng):
    q, k, v = rng.standard_normal((2, 3, 9, 5)), rng.standard_normal((2, 3, 7, 5)), rng.standard_normal((2, 3, 7, 4))
    mask = np.where(rng.random((9, 7)) < 0.3, -np.inf, rng.standard_normal((9, 7)))
    mask[2] = -np.inf  # a fully masked row: zero output, zero gradients
    big = {"q": q * 30.0, "k": k, "v": v, "causal": np.array(True)}  # large logits
    return [Case("plain", {"q": q, "k": k, "v": v, "causal": np.array(False)}, ("q", "k", "v")),
            Case("causal", {"q": q, "k": k, "v": v, "causal": np.array(True)}, ("q", "k", "v")),
            Case("large-logits-causal", big, ("q", "k", "v")),
            Case("mask", {"q": q, "k": k, "v": v, "causal": np.array(False), "mask": mask}, ("q", "k", "v"))]


def _attention_call(t):
    import gmcore.nn.functional as NF

    return (NF.scaled_dot_product_attention(t["q"], t["k"], t["v"], attn_mask=t.get("mask"),
                                            is_causal=bool(t["causal"].item())),)


# ---- norm (layer_norm, group_norm, batch_norm) ---------------------------------------------

def _norm_cases(rng, names):
    x = rng.standard_normal((3, 6, 5)) * 2 + 1
    edge = 3.0 + rng.standard_normal((3, 6, 5)) * 0.1  # an offset (float32 inputs round it)
    edge[0] = 1.5  # constant rows / groups: variance 0
    params = {"w": rng.standard_normal(6), "b": rng.standard_normal(6), "wl": rng.standard_normal(5),
              "bl": rng.standard_normal(5), "rm": rng.standard_normal(6), "rv": rng.uniform(0.5, 2, 6)}
    return [Case("random", dict(params, x=x), names), Case("edge", dict(params, x=edge), names)]


def _nnF():
    import gmcore.nn.functional as NF

    return NF


def _layer_norm_call(t):
    return (_nnF().layer_norm(t["x"], (5,), t["wl"], t["bl"]), _nnF().layer_norm(t["x"], (6, 5)))


def _group_norm_call(t):
    return (_nnF().group_norm(t["x"], 3, t["w"], t["b"]), _nnF().instance_norm(t["x"]))


def _batch_norm_call(t):
    return (_nnF().batch_norm(t["x"], None, None, t["w"], t["b"], training=True),
            _nnF().batch_norm(t["x"], t["rm"], t["rv"], t["w"], t["b"], training=False),
            _nnF().batch_norm(t["x"][:, :, 0], None, None, t["w"], t["b"], training=True))


# ---- pool ----------------------------------------------------------------------------------

def _pool_cases(rng):
    x = rng.permutation(2 * 3 * 7 * 9).reshape(2, 3, 7, 9) / 10.0  # distinct: one argmax each
    return [Case("random", {"x": x}, ("x",)),
            Case("batch-1", {"x": rng.standard_normal((1, 2, 5, 6))}, ("x",))]


def _pool(t):
    import gmcore.nn.functional as NF

    x = t["x"]
    return (NF.max_pool2d(x, 2), NF.max_pool2d(x, 3, 2, 1, ceil_mode=True), NF.avg_pool2d(x, 2),
            NF.avg_pool2d(x, 3, 2, 1, count_include_pad=False))

# ---- conv (stride-2 and plain convolutions: compiled im2col/col2im, phase planes) -------------

def _strided_cases(rng):
    return [Case("4x4", {"x": rng.standard_normal((2, 3, 9, 8)), "w": rng.standard_normal((5, 3, 4, 4)) * 0.2,
                         "wt": rng.standard_normal((3, 4, 4, 4)) * 0.2, "b": rng.standard_normal(5)},
                 ("x", "w", "wt", "b")),
            Case("3x3", {"x": rng.standard_normal((1, 3, 7, 7)), "w": rng.standard_normal((4, 3, 3, 3)) * 0.3,
                         "wt": rng.standard_normal((3, 2, 3, 3)) * 0.3, "b": rng.standard_normal(4)},
                 ("x", "w", "wt", "b"))]


def _strided(t):
    import gmcore.nn.functional as NF

    x = t["x"]
    return (NF.conv2d(x, t["w"], t["b"], stride=2, padding=1), NF.conv2d(x, t["w"], padding=1),
            NF.conv_transpose2d(x, t["wt"], stride=2, padding=1))

SPECS: list[Spec] = [
    Spec("logsumexp", "logsumexp", ("forward",), _lse_cases, lambda t: (_F().logsumexp(t["x"], dim=-1),)),
    Spec("dlml", "nll", ("forward",), _dlml_cases, _dlml_call, tol32=3e-4),
    Spec("vq", "nearest", ("nearest",), _vq_nearest_cases, lambda t: _F().vq_nearest(t["z"], t["codebook"]),
         exact=(0,)),
    Spec("vq", "ema_stats", ("ema_stats",), _vq_ema_cases, _vq_ema_call, tol32=1e-4),
    Spec("coupling", "affine", ("affine",), _coupling_cases, _coupling_call, tol32=1e-4),
    Spec("spline", "rational_quadratic_spline", ("rq",), _spline_cases, _spline_call, tol32=1e-4),
    Spec("diffusion", "q_sample", ("q_sample",), lambda r: _diff_cases(r, grad=("x0", "noise")), _q_sample),
    Spec("diffusion", "predict_x0", ("predict_x0",), _diff_cases, _predict_x0),
    Spec("diffusion", "ddpm_step", ("ddpm_step",), lambda r: _diff_cases(r, out2=True), _ddpm),
    Spec("diffusion", "ddim_step", ("ddim_step",), _diff_cases, _ddim),
    Spec("diffusion", "eps_mse_loss", ("eps_loss_fwd", "eps_loss_bwd"), lambda r: _diff_cases(r, grad=("m",)),
         _eps_loss),
    Spec("diffusion", "hybrid_loss", ("hybrid_fwd", "hybrid_bwd"),
         lambda r: _diff_cases(r, out2=True, grad=("m",)), _hybrid, tol32=1e-4),
    Spec("masked_conv", "masked_conv2d", ("tap_conv2d",), _conv_cases, _masked, tol32=1e-4),
    Spec("masked_conv", "shifted_conv2d", ("tap_conv2d",), _conv_cases, _shifted, tol32=1e-4),
    Spec("masked_conv", "conv2d", ("conv2d",), _conv_cases, _plain_conv, tol32=1e-4),
    Spec("conv", "conv2d+conv_transpose2d", ("conv2d",), _strided_cases, _strided, tol32=1e-4),
    Spec("pool", "max/avg_pool2d", ("max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"),
         _pool_cases, _pool),
    Spec("causal_conv", "causal_conv1d", ("tap_conv2d",), _causal_cases, _causal, tol32=1e-4),
    Spec("causal_conv", "wavenet_block", ("wavenet_gate_forward", "wavenet_gate_backward"), _wavenet_cases,
         _wavenet, tol32=1e-4),
    Spec("softmax", "softmax+log_softmax", ("forward", "backward"), _softmax_cases, _softmax_call),
    Spec("softmax", "cross_entropy", ("ce_forward", "ce_backward"), _ce_cases, _ce_call, tol32=1e-4),
    Spec("embedding", "embedding", ("backward",), _embedding_cases, _embedding_call),
    Spec("attention", "scaled_dot_product_attention", ("forward", "backward"), _attention_cases,
         _attention_call, tol32=1e-4),
    Spec("norm", "layer_norm", ("row_forward", "row_backward"), lambda r: _norm_cases(r, ("x", "wl", "bl")),
         _layer_norm_call, tol32=1e-4),
    Spec("norm", "group_norm+instance_norm", ("row_forward", "row_backward"),
         lambda r: _norm_cases(r, ("x", "w", "b")), _group_norm_call, tol32=1e-4),
    Spec("norm", "batch_norm", ("chan_forward", "chan_backward"), lambda r: _norm_cases(r, ("x", "w", "b")),
         _batch_norm_call, tol32=1e-4),
    Spec("activation", "gelu silu elu leaky_relu softplus mish", ("forward", "backward"), _activation_cases,
         _activation_call),
    Spec("activation", "concat_elu", ("concat_elu_forward", "concat_elu_backward"), _concat_elu_cases,
         _concat_elu_call),
]
