"""Benchmark the diffusion kernels: q_sample, the eps-MSE loss (fwd / bwd / fwd+bwd), the hybrid
loss (fwd+bwd), one DDPM step and one DDIM step, at B=64, 3x32x32 (float32, T=1000 linear).

Every implementation available on the device runs through the public op (``GMCORE_KERNELS``
selection), next to torch eager (and ``torch.compile`` on a GPU) written the straightforward way
(gather the coefficients, broadcast, elementwise), when torch is installed.

    python benchmarks/bench_diffusion.py --device cpu
    python benchmarks/bench_diffusion.py --small --no-save      # smoke run
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import (devices, kernels_env_restored, measure, parse_args, report, row,  # noqa: E402
                      torch_or_none, use_implementation)

import gmcore as gm  # noqa: E402
import gmcore.functional as F  # noqa: E402
from gmcore import dispatch  # noqa: E402
from gmcore.schedules import NoiseSchedule  # noqa: E402

FAMILY = "diffusion"
T_STEPS = 1000


def _shape(small):
    return (4, 3, 8, 8) if small else (64, 3, 32, 32)


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, shape).astype(np.float32)
    noise = rng.standard_normal(shape).astype(np.float32)
    eps = (noise + 0.1 * rng.standard_normal(shape)).astype(np.float32)
    v = rng.uniform(-1, 1, shape).astype(np.float32)
    t = rng.integers(0, T_STEPS, shape[0]).astype(np.int64)
    t_prev = np.maximum(t - 20, -1)
    return dict(x0=x0, noise=noise, eps=eps, v=v, t=t, t_prev=t_prev)


def _bytes(nbytes, op, mode):
    # minimum traffic in units of one (B, C, H, W) array
    units = {("q_sample", "fwd"): 3, ("eps_loss", "fwd"): 2, ("eps_loss", "bwd"): 3,
             ("eps_loss", "fwd+bwd"): 5, ("hybrid_loss", "fwd+bwd"): 5 + 6,
             ("ddpm_step", "fwd"): 4, ("ddim_step", "fwd"): 4}
    return units[(op, mode)] * nbytes


def _gm_cases(device, d, sched):
    x0 = gm.tensor(d["x0"], device=device)
    noise = gm.tensor(d["noise"], device=device)
    t = gm.tensor(d["t"], device=device)
    tp = gm.tensor(d["t_prev"], device=device)
    eps = gm.tensor(d["eps"], device=device, requires_grad=True)
    mo = gm.tensor(np.concatenate([d["eps"], d["v"]], 1), device=device, requires_grad=True)
    w = np.linspace(0.5, 1.5, T_STEPS)
    xt = F.q_sample(x0, t, noise, sched)

    def q_sample():
        with gm.no_grad():
            F.q_sample(x0, t, noise, sched)

    def eps_fwd():
        with gm.no_grad():
            F.eps_mse_loss(eps, noise, t, weights=w)

    def eps_fwd_bwd():
        eps.grad = None
        F.eps_mse_loss(eps, noise, t, weights=w).backward()

    loss = F.eps_mse_loss(eps, noise, t, weights=w)

    def eps_bwd():
        loss.backward(retain_graph=True)

    def hybrid_fwd_bwd():
        mo.grad = None
        F.hybrid_loss(mo, x0, xt, noise, t, sched).backward()

    def ddpm():
        with gm.no_grad():
            F.ddpm_step(xt, eps, t, noise, sched)

    def ddim():
        with gm.no_grad():
            F.ddim_step(xt, eps, t, tp, 1.0, noise, sched)

    return [("q_sample", "fwd", q_sample), ("eps_loss", "fwd", eps_fwd), ("eps_loss", "bwd", eps_bwd),
            ("eps_loss", "fwd+bwd", eps_fwd_bwd), ("hybrid_loss", "fwd+bwd", hybrid_fwd_bwd),
            ("ddpm_step", "fwd", ddpm), ("ddim_step", "fwd", ddim)]


def _torch_cases(torch, device, d, sched, compiled=False):
    """The straightforward torch way: gather per-example coefficients, broadcast, elementwise."""
    dev = "cuda" if device == "cuda" else "cpu"

    def ten(a, **kw):
        return torch.tensor(a, device=dev, **kw)

    x0, noise, t, tp = ten(d["x0"]), ten(d["noise"]), ten(d["t"]), ten(d["t_prev"])
    eps = ten(d["eps"], requires_grad=True)
    c = {name: ten(getattr(sched, name).astype(np.float32)) for name in (
        "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2",
        "posterior_log_variance_clipped", "alphas_cumprod")}
    w = ten(np.linspace(0.5, 1.5, T_STEPS).astype(np.float32))
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def g(name, idx):
        return c[name][idx].view(-1, 1, 1, 1)

    def q_sample_fn(x0, noise, t):
        return g("sqrt_alphas_cumprod", t) * x0 + g("sqrt_one_minus_alphas_cumprod", t) * noise

    def eps_loss_fn(eps, noise, t):
        return (w[t] * ((eps - noise) ** 2).mean(dim=(1, 2, 3))).mean()

    def ddpm_fn(xt, eps, t, noise):
        x0 = (g("sqrt_recip_alphas_cumprod", t) * xt - g("sqrt_recipm1_alphas_cumprod", t) * eps).clamp(-1, 1)
        mean = g("posterior_mean_coef1", t) * x0 + g("posterior_mean_coef2", t) * xt
        nonzero = (t != 0).float().view(-1, 1, 1, 1)
        return mean + nonzero * torch.exp(0.5 * g("posterior_log_variance_clipped", t)) * noise

    def ddim_fn(xt, eps, t, tp, noise, eta=1.0):
        a_t = g("alphas_cumprod", t)
        a_p = torch.where(tp >= 0, c["alphas_cumprod"][tp.clamp(min=0)], torch.ones_like(tp, dtype=xt.dtype))
        a_p = a_p.view(-1, 1, 1, 1)
        x0 = ((xt - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
        e = (xt - a_t.sqrt() * x0) / (1 - a_t).sqrt()
        sigma = eta * ((1 - a_p) / (1 - a_t) * (1 - a_t / a_p)).sqrt()
        return a_p.sqrt() * x0 + (1 - a_p - sigma ** 2).clamp(min=0).sqrt() * e + sigma * noise

    if compiled:
        q_sample_fn, eps_loss_fn, ddpm_fn, ddim_fn = (torch.compile(f, dynamic=False) for f in (
            q_sample_fn, eps_loss_fn, ddpm_fn, ddim_fn))
    xt = q_sample_fn(x0, noise, t).detach()

    def q_sample():
        with torch.no_grad():
            q_sample_fn(x0, noise, t)
        sync()

    def eps_fwd():
        with torch.no_grad():
            eps_loss_fn(eps, noise, t)
        sync()

    def eps_fwd_bwd():
        eps.grad = None
        eps_loss_fn(eps, noise, t).backward()
        sync()

    loss = eps_loss_fn(eps, noise, t)

    def eps_bwd():
        loss.backward(retain_graph=True)
        sync()

    def ddpm():
        with torch.no_grad():
            ddpm_fn(xt, eps, t, noise)
        sync()

    def ddim():
        with torch.no_grad():
            ddim_fn(xt, eps, t, tp, noise)
        sync()

    return [("q_sample", "fwd", q_sample), ("eps_loss", "fwd", eps_fwd), ("eps_loss", "bwd", eps_bwd),
            ("eps_loss", "fwd+bwd", eps_fwd_bwd), ("ddpm_step", "fwd", ddpm), ("ddim_step", "fwd", ddim)]


def main(argv=None):
    args = parse_args(FAMILY, argv)
    # torch is imported only after gmcore's runs: once torch is loaded, every OpenMP / numba
    # parallel region of this process was seen stalling for ~8 ms on a 2-core machine
    shape = _shape(args.small)
    size = "B={} C={} {}x{}".format(*shape)
    d = _inputs(shape)
    sched = NoiseSchedule.linear(T_STEPS)
    nbytes = d["x0"].nbytes
    rows = []
    with kernels_env_restored():
        for device in devices(args.device):
            runs = []
            for name in dispatch.implementations(FAMILY, device):
                try:
                    use_implementation(FAMILY, name)
                    dispatch.get(FAMILY, "q_sample", device)
                except (dispatch.KernelUnavailable, ValueError) as exc:
                    print(f"# {device}/{name}: unavailable ({exc})", file=sys.stderr)
                    continue
                runs.append((name, lambda dev=device: _gm_cases(dev, d, sched), name))
            torch_runs = [("torch", lambda dev=device: _torch_cases(torch_or_none(), dev, d, sched), None)]
            if device == "cuda":
                torch_runs.append(("torch.compile", lambda dev=device: _torch_cases(
                    torch_or_none(), dev, d, sched, compiled=True), None))
            for label, make, impl in runs + torch_runs:
                if impl is not None:
                    use_implementation(FAMILY, impl)
                elif torch_or_none() is None or (device == "cuda" and not torch_or_none().cuda.is_available()):
                    continue
                for op, mode, fn in make():
                    stats = measure(fn, device, args.repeats, args.warmup)
                    rows.append(row(FAMILY, label, f"{op} {mode}", f"{device} {size}", stats,
                                    bytes_moved=_bytes(nbytes, op, mode)))
    return report(rows, FAMILY, args)


if __name__ == "__main__":
    main()
