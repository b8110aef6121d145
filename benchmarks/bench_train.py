"""VAE training throughput on digits: gmcore vs the same model in torch (CPU).

    python benchmarks/bench_train.py [--steps 60] [--rounds 3] [--batch-size 64] [--threads N]

The model is the README default (`gmcore train vae`): MLP encoder and decoder (64-256-256, ELU),
16 latents, a 3-component discretized logistic decoder over the 17 digit levels, Adam; plus the
Bernoulli-decoder variant. The torch peer is written the straightforward way with the same
layer sizes and the same likelihood. Each (implementation, decoder) runs in a process of its
own, in alternating rounds; the figure is the median step time over rounds of the median over
``--steps`` timed steps. Prints a markdown table and writes
``benchmarks/results/train_<machine>.{json,md}``. Target: gmcore at most 1.5x torch's step time.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
DECODERS = ("logistic", "bernoulli")


def _digits(binary):
    from gmcore.data.digits import load_digits_arrays

    x = load_digits_arrays("train")[0].astype(np.float32) / 16.0
    return (x > 0.5).astype(np.float32) if binary else x


def run_gmcore(decoder, steps, batch):
    import gmcore as gm
    from gmcore.models.base import DataInfo
    from gmcore.models.latent import VAE

    gm.manual_seed(0)
    levels = 2 if decoder == "bernoulli" else 17
    model = VAE(VAE.Config(decoder=decoder), DataInfo((1, 8, 8), levels))
    opt = gm.optim.Adam(model.parameters(), lr=1e-3)
    data = _digits(decoder == "bernoulli")
    rng = np.random.default_rng(0)

    def step():
        x = gm.tensor(data[rng.integers(0, len(data), batch)])
        loss, _ = model.loss((x,))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _time(step, steps)


def _torch_dlml_nll(torch, x, params, k, bins):
    """Grey-scale discretized logistic mixture NLL per example (PixelCNN++ math, 17 bins)."""
    F = torch.nn.functional
    logits, means, log_s = params[:, :k], params[:, k:2 * k], params[:, 2 * k:3 * k].clamp(min=-7.0)
    x = x.expand_as(means)
    h = 1.0 / (bins - 1)
    inv = torch.exp(-log_s)
    plus, minus = inv * (x - means + h), inv * (x - means - h)
    log_cdf_plus = plus - F.softplus(plus)
    log_one_minus_cdf_min = -F.softplus(minus)
    cdf_delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv * (x - means)
    log_pdf_mid = mid - log_s - 2.0 * F.softplus(mid)
    thresh = 1e-5 * 255.0 / (bins - 1)
    inner = torch.where(cdf_delta > thresh, torch.log(cdf_delta.clamp(min=1e-12)),
                        log_pdf_mid - np.log((bins - 1) / 2))
    logp = torch.where(x < -1 + h, log_cdf_plus, torch.where(x > 1 - h, log_one_minus_cdf_min, inner))
    logp = torch.logsumexp(logp + F.log_softmax(logits, 1), 1)
    return -logp.flatten(1).sum(1)


def run_torch(decoder, steps, batch):
    import torch
    from torch import nn

    torch.manual_seed(0)
    k, latent = 3, 16
    out = 64 if decoder == "bernoulli" else 64 * 3 * k

    def mlp(i, o):
        return nn.Sequential(nn.Linear(i, 256), nn.ELU(), nn.Linear(256, 256), nn.ELU(), nn.Linear(256, o))

    enc, dec = mlp(64, 2 * latent), mlp(latent, out)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    data = torch.from_numpy(_digits(decoder == "bernoulli"))
    rng = np.random.default_rng(0)

    def step():
        x = data[torch.from_numpy(rng.integers(0, len(data), batch))]
        mu, log_var = enc(x.reshape(batch, -1)).chunk(2, 1)
        log_var = log_var.clamp(-12, 8)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        o = dec(z)
        if decoder == "bernoulli":
            recon = nn.functional.binary_cross_entropy_with_logits(o, x.reshape(batch, -1),
                                                                   reduction="none").sum(1)
        else:
            recon = _torch_dlml_nll(torch, x * 2 - 1, o.reshape(batch, 3 * k, 8, 8), k, 17)
        kl = 0.5 * (mu * mu + log_var.exp() - 1 - log_var).sum(1)
        loss = (recon + kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _time(step, steps)


def _time(step, steps):
    for _ in range(5):
        step()
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        t.append(time.perf_counter() - t0)
    return {"median_ms": float(np.median(t) * 1e3), "p20_ms": float(np.percentile(t, 20) * 1e3),
            "p80_ms": float(np.percentile(t, 80) * 1e3)}


def _child(args):
    if args.impl == "torch":
        import torch

        torch.set_num_threads(args.threads)
        res = run_torch(args.decoder, args.steps, args.batch_size)
    else:
        res = run_gmcore(args.decoder, args.steps, args.batch_size)
    print(json.dumps(res))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--decoder", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.impl:
        return _child(args)
    try:
        import torch  # noqa: F401
        impls = ["gmcore", "torch"]
    except ImportError:
        impls = ["gmcore"]
        print("torch not installed: gmcore only (pip install -e '.[bench]' for the peer)")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    results = {}
    for _ in range(args.rounds):
        for decoder in DECODERS:
            for impl in impls:
                out = subprocess.run([sys.executable, __file__, "--impl", impl, "--decoder", decoder,
                                      "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                                      "--threads", str(args.threads)],
                                     capture_output=True, text=True, env=env, check=True)
                results.setdefault((decoder, impl), []).append(json.loads(out.stdout.splitlines()[-1]))
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    rows, lines = [], ["| decoder | gmcore ms/step | torch ms/step | ratio | target <= 1.5x |",
                       "|---|---|---|---|---|"]
    for decoder in DECODERS:
        g = float(np.median([r["median_ms"] for r in results[(decoder, "gmcore")]]))
        t = float(np.median([r["median_ms"] for r in results[(decoder, "torch")]])) if "torch" in impls else None
        ratio = g / t if t else None
        rows.append({"decoder": decoder, "gmcore_ms": g, "torch_ms": t, "ratio": ratio,
                     "gmcore_steps_per_s": 1e3 / g, "batch_size": args.batch_size})
        lines.append(f"| {decoder} | {g:.2f} | {t:.2f} | {ratio:.2f}x | {'yes' if ratio <= 1.5 else 'NO'} |"
                     if t else f"| {decoder} | {g:.2f} | - | - | - |")
    table = "\n".join(lines)
    print(f"VAE training step on digits, batch {args.batch_size}, {args.threads} threads, {machine}\n")
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"train_{machine}.json").write_text(json.dumps(
            {"machine": machine, "threads": args.threads, "rows": rows, "raw": {f"{k[0]}/{k[1]}": v for k, v in
                                                                              results.items()}}, indent=1))
        (RESULTS / f"train_{machine}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
