"""Engine benchmark: per-op overhead, an MLP training step and conv2d, gmcore vs torch (CPU).

    python benchmarks/bench_engine.py [--suite engine|ops] [--only TEXT...] [--repeats 30]
                                      [--rounds 3] [--threads N] [--small] [--no-save]

Prints a markdown table and writes benchmarks/results/engine_<machine>.json and .md. Each figure is
the median (with p20/p80) of ``--repeats`` timed runs after warm-up, in a process of its own per
implementation, then the median over ``--rounds`` alternating rounds. torch is used only as a peer
when it is installed (the ``bench`` extra); it is never needed by gmcore itself.
Targets (2-core CPU): per-op overhead <= 3x torch, MLP step <= 1.5x torch, conv2d <= 3x torch.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gmcore as gm
import gmcore.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def timeit(fn, repeats, inner=1, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    t = np.array(times)
    return float(np.median(t)), float(np.percentile(t, 20)), float(np.percentile(t, 80))


def make_cases(lib, F):
    """The benchmark cases for ``lib`` (gmcore or torch: the same API names serve both)."""
    lib.manual_seed(0)
    a, b = lib.randn(8, 8), lib.randn(8, 8)
    ag = a.clone().requires_grad_()
    x = lib.randn(128, 512)
    y = lib.randint(0, 10, (128,))
    ws = [(lib.randn(o, 512) * 0.04).requires_grad_() for o in (512, 512, 10)]
    bs = [lib.zeros(o, requires_grad=True) for o in (512, 512, 10)]
    img = lib.randn(32, 64, 32, 32)
    wc = (lib.randn(64, 64, 3, 3) * 0.05).requires_grad_()

    def mlp_step():
        h = F.relu(F.linear(x, ws[0], bs[0]))
        h = F.relu(F.linear(h, ws[1], bs[1]))
        loss = F.cross_entropy(F.linear(h, ws[2], bs[2]), y)
        for p in ws + bs:
            p.grad = None
        loss.backward()
        with lib.no_grad():
            for p in ws + bs:
                p.sub_(0.01 * p.grad)

    def conv_step():
        wc.grad = None
        F.conv2d(img, wc, padding=1).sum().backward()

    return {
        ("add 8x8", "overhead"): (lambda: a + b, 200),
        ("matmul 8x8", "overhead"): (lambda: a @ b, 200),
        ("sum 8x8", "overhead"): (lambda: a.sum(), 200),
        ("add 8x8 (grad)", "overhead"): (lambda: ag + b, 200),
        ("mlp step 128x512", "train"): (mlp_step, 1),
        ("conv2d 32x64x32x32 3x3 fwd+bwd", "train"): (conv_step, 1),
    }


def make_op_cases(lib, F, small=False):
    """``--suite ops``: forward + backward of the core ops at the sizes the model families use,
    and two whole blocks (a DDPM U-Net residual block, a DCGAN discriminator).
    Targets (issue 13): every op <= 1.5x torch CPU eager, each block <= 1.3x, and no op slower
    than gmcore's own ``reference`` twin (the ``gmcore-reference`` column)."""
    lib.manual_seed(0)
    s = 4 if small else 1  # --small: divide the batch dims (a smoke run, not a measurement)

    def leaf(*shape, scale=1.0):
        return (lib.randn(*shape) * scale).requires_grad_()

    x_act = leaf(64 // s, 256, 32)                 # activations: 64x256x32
    x_img = leaf(32 // s, 64, 32, 32)              # pooling, conv_transpose input
    x_gn = leaf(32 // s, 64, 16, 16)               # group/batch norm
    x_ln = leaf(64 // s, 128, 256)                 # layer norm over the last dim
    gamma, beta = leaf(64), leaf(64)
    gamma_ln, beta_ln = leaf(256), leaf(256)
    running_mean, running_var = lib.zeros(64), lib.ones(64)
    logits = leaf(512 // s, 1000)
    target = lib.randint(0, 1000, (512 // s,))
    table = leaf(10000, 128)
    idx = lib.randint(0, 10000, (64 // s, 256))
    q, k, v = (leaf(16 // s, 4, 256, 32) for _ in range(3))
    w_s2k4 = leaf(128, 64, 4, 4, scale=0.05)       # conv2d 4x4 stride 2: 64 -> 128 channels
    w_s2k3 = leaf(128, 64, 3, 3, scale=0.05)
    w_ct = leaf(64, 32, 4, 4, scale=0.05)          # conv_transpose2d 4x4 stride 2: 64 -> 32

    cases = {
        "gelu 64x256x32": lambda: F.gelu(x_act),
        "gelu tanh 64x256x32": lambda: F.gelu(x_act, approximate="tanh"),
        "silu 64x256x32": lambda: F.silu(x_act),
        "elu 64x256x32": lambda: F.elu(x_act),
        "leaky_relu 64x256x32": lambda: F.leaky_relu(x_act, 0.2),
        "softplus 64x256x32": lambda: F.softplus(x_act),
        "mish 64x256x32": lambda: F.mish(x_act),
        "layer_norm 64x128x256": lambda: F.layer_norm(x_ln, (256,), gamma_ln, beta_ln),
        "group_norm 32x64x16x16 g8": lambda: F.group_norm(x_gn, 8, gamma, beta),
        "batch_norm train 32x64x16x16": lambda: F.batch_norm(
            x_gn, running_mean, running_var, gamma, beta, training=True),
        "batch_norm eval 32x64x16x16": lambda: F.batch_norm(
            x_gn, running_mean, running_var, gamma, beta, training=False),
        "softmax 512x1000": lambda: F.softmax(logits, 1),
        "log_softmax 512x1000": lambda: F.log_softmax(logits, 1),
        "cross_entropy 512x1000": lambda: F.cross_entropy(logits, target),
        "cross_entropy smooth 0.1": lambda: F.cross_entropy(logits, target, label_smoothing=0.1),
        "embedding 64x256 of 10kx128": lambda: F.embedding(idx, table),
        "max_pool2d 2x2 32x64x32x32": lambda: F.max_pool2d(x_img, 2),
        "avg_pool2d 2x2 32x64x32x32": lambda: F.avg_pool2d(x_img, 2),
        "conv2d 4x4 s2 32x64x32x32": lambda: F.conv2d(x_img, w_s2k4, stride=2, padding=1),
        "conv2d 3x3 s2 32x64x32x32": lambda: F.conv2d(x_img, w_s2k3, stride=2, padding=1),
        "conv_transpose2d 4x4 s2 32x64x32x32": lambda: F.conv_transpose2d(
            x_img, w_ct, stride=2, padding=1),
        "attention 16x4x256x32": lambda: F.scaled_dot_product_attention(q, k, v),
        "attention causal 16x4x256x32": lambda: F.scaled_dot_product_attention(
            q, k, v, is_causal=True),
    }
    leaves = [x_act, x_img, x_gn, x_ln, gamma, beta, gamma_ln, beta_ln, logits, table, q, k, v,
              w_s2k4, w_s2k3, w_ct]
    blocks = {
        "DDPM U-Net res block 32x64x16x16": _ddpm_res_block(lib, F, 32 // s, leaves),
        "DCGAN discriminator 64x3x32x32": _dcgan_discriminator(lib, F, 64 // s, leaves),
    }

    def fwd_bwd(f):
        def run():
            for t in leaves:
                t.grad = None
            f().sum().backward()
        return run
    out = {(name, "op"): (fwd_bwd(f), 1) for name, f in cases.items()}
    out.update({(name, "block"): (fwd_bwd(f), 1) for name, f in blocks.items()})
    return out


def _ddpm_res_block(lib, F, n, leaves):
    """Ho et al.'s residual block at 16x16: GroupNorm(32), SiLU, 3x3 conv, + time embedding,
    GroupNorm, SiLU, 3x3 conv, + skip."""
    c = 64
    x = (lib.randn(n, c, 16, 16)).requires_grad_()
    temb = lib.randn(n, 256)
    g1, b1, g2, b2 = (lib.ones(c).requires_grad_(), lib.zeros(c).requires_grad_(),
                      lib.ones(c).requires_grad_(), lib.zeros(c).requires_grad_())
    w1, w2 = ((lib.randn(c, c, 3, 3) * 0.04).requires_grad_() for _ in range(2))
    cb1, cb2 = lib.zeros(c).requires_grad_(), lib.zeros(c).requires_grad_()
    wt, bt = (lib.randn(c, 256) * 0.06).requires_grad_(), lib.zeros(c).requires_grad_()
    leaves += [x, g1, b1, g2, b2, w1, w2, cb1, cb2, wt, bt]

    def block():
        h = F.conv2d(F.silu(F.group_norm(x, 32, g1, b1)), w1, cb1, padding=1)
        h = h + F.linear(F.silu(temb), wt, bt)[:, :, None, None]
        h = F.conv2d(F.silu(F.group_norm(h, 32, g2, b2)), w2, cb2, padding=1)
        return x + h
    return block


def _dcgan_discriminator(lib, F, n, leaves):
    """Radford et al.'s discriminator at 32x32: 4x4 stride-2 convs 3 -> 64 -> 128 -> 256 (batch
    norm after the first), leaky ReLU 0.2, a 4x4 valid conv to one logit."""
    x = lib.randn(n, 3, 32, 32)
    ws = [(lib.randn(o, i, 4, 4) * 0.02).requires_grad_()
          for i, o in ((3, 64), (64, 128), (128, 256), (256, 1))]
    bn = [(lib.ones(c).requires_grad_(), lib.zeros(c).requires_grad_()) for c in (128, 256)]
    stats = [(lib.zeros(c), lib.ones(c)) for c in (128, 256)]
    leaves += ws + [p for pair in bn for p in pair]

    def disc():
        h = F.leaky_relu(F.conv2d(x, ws[0], stride=2, padding=1), 0.2)
        for w, (g, b), (m, v) in zip(ws[1:3], bn, stats):
            h = F.conv2d(h, w, stride=2, padding=1)
            h = F.leaky_relu(F.batch_norm(h, m, v, g, b, training=True), 0.2)
        return F.conv2d(h, ws[3])
    return disc


SUITES = {"engine": make_cases, "ops": make_op_cases}
TARGETS = {"overhead": 3.0, "train": 1.5, "op": 1.5, "block": 1.3}
TARGET_OVERRIDES = {"conv2d 32x64x32x32 3x3 fwd+bwd": 3.0}


def run_impl(impl, repeats, threads, suite="engine", only=(), small=False):
    """Time every case of one implementation (run in its own process: see main)."""
    if impl.startswith("gmcore"):  # gmcore-reference: the same, with GMCORE_KERNELS=reference
        label, cases = impl, _cases(suite, gm, F, small)
    else:
        import torch
        if threads:
            torch.set_num_threads(threads)
        label, cases = f"torch {torch.__version__}", _cases(suite, torch, torch.nn.functional, small)
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    rows = []
    for (name, kind), (fn, inner) in cases.items():
        if only and not any(o in name for o in only):
            continue
        med, p20, p80 = timeit(fn, repeats, inner)
        rows.append(dict(case=name, kind=kind, implementation=label, median_s=med, p20_s=p20,
                         p80_s=p80, machine=machine))
        print(f"{label:20s} {name:34s} {med * 1e6:12.1f} us", file=sys.stderr)
    return rows


def _cases(suite, lib, F, small):
    return make_op_cases(lib, F, small) if suite == "ops" else SUITES[suite](lib, F)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds of gmcore and torch processes (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--suite", choices=sorted(SUITES), default="engine",
                   help="engine: the per-op overhead and training-step cases (default); "
                        "ops: the core ops and two model blocks (issue 13's targets)")
    p.add_argument("--only", nargs="+", default=(), metavar="TEXT",
                   help="run only the cases whose name contains one of these strings "
                        "(results are merged into the saved table)")
    p.add_argument("--small", action="store_true", help="smaller batches (a smoke run)")
    p.add_argument("--no-save", action="store_true", help="print the table, write nothing")
    p.add_argument("--impl", choices=["gmcore", "gmcore-reference", "torch"], default=None,
                   help=argparse.SUPPRESS)  # internal: one implementation, rows as JSON
    args = p.parse_args(argv)
    if args.impl:
        print(json.dumps(run_impl(args.impl, args.repeats, args.threads, args.suite,
                                  args.only, args.small)))
        return 0

    # Each implementation runs in its own process: torch's OpenMP pool and NumPy's BLAS
    # threads fight for the cores when they share one, which slows both.
    machine = f"{platform.machine()}-{os.cpu_count()}cpu"
    impls = ["gmcore", "gmcore-reference"]
    if importlib.util.find_spec("torch") is not None:
        impls.append("torch")
    else:
        print("torch not installed: gmcore figures only (pip install .[bench] for the peer)")
    # Rounds alternate the implementations so that drifting machine load (these machines are
    # shared) hits both alike; each figure is the median over rounds of per-round medians.
    runs = {}
    for _ in range(args.rounds):
        for impl in impls:
            cmd = [sys.executable, __file__, "--impl", impl, "--repeats", str(args.repeats),
                   "--suite", args.suite]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.only:
                cmd += ["--only", *args.only]
            if args.small:
                cmd.append("--small")
            env = dict(os.environ)
            if impl == "gmcore-reference":
                env["GMCORE_KERNELS"] = "reference"
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True,
                                 env=env).stdout
            for r in json.loads(out.strip().splitlines()[-1]):
                runs.setdefault((r["case"], r["implementation"]), []).append(r)
    rows = []
    for group in runs.values():
        row = dict(group[0])
        for key in ("median_s", "p20_s", "p80_s"):
            row[key] = float(np.median([r[key] for r in group]))
        row["rounds"] = len(group)
        rows.append(row)

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{args.suite}_{machine}"
    if args.only and not args.no_save and stem.with_suffix(".json").exists():
        # a partial run replaces its own cases in the saved table and keeps the others
        fresh = {r["case"] for r in rows}
        kept = [r for r in json.loads(stem.with_suffix(".json").read_text())
                if r["case"] not in fresh]
        rows = kept + rows
    table = _table(rows)
    print(table)
    if not args.no_save:
        _atomic_write(stem.with_suffix(".json"), json.dumps(rows, indent=1))
        _atomic_write(stem.with_suffix(".md"),
                      f"# bench_engine --suite {args.suite} on {machine}\n\n{table}\n")
    return 0


def _table(rows):
    """Markdown: gmcore, its reference twin, torch, the ratio to torch against the target."""
    by = {(r["case"], r["implementation"].split()[0]): r["median_s"] for r in rows}
    lines = ["| case | gmcore | gmcore reference | torch | ratio | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["implementation"] != "gmcore":
            continue
        t = by.get((r["case"], "torch"))
        ref = by.get((r["case"], "gmcore-reference"))
        target = TARGET_OVERRIDES.get(r["case"], TARGETS.get(r["kind"]))
        goal = f"<= {target}x" if target else "-"
        ref_txt = _fmt(ref) if ref else "-"
        if t:
            ratio = r["median_s"] / t
            met = "-" if not target else "yes" if ratio <= target else "no"
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | {ref_txt} | {_fmt(t)} | "
                         f"{ratio:.2f}x | {goal} | {met} |")
        else:
            lines.append(f"| {r['case']} | {_fmt(r['median_s'])} | {ref_txt} | - | - | {goal} "
                         "| - |")
    return "\n".join(lines)


def _fmt(seconds):
    return f"{seconds * 1e6:.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:.2f} ms"


def _atomic_write(path, text):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
