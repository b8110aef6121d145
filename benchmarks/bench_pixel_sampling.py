"""Pixel-by-pixel sampling of PixelCNN and Gated PixelCNN: the naive sampler (the whole network
rerun on the image so far for every pixel) against the fast one (every layer's activations
cached, only the new pixel's position computed: Ramachandran et al. 2017), in samples/s.

    python benchmarks/bench_pixel_sampling.py [--repeats 3] [--warmup 1] [--device cpu|cuda|all]
                                              [--small] [--no-save]

Models: ``pixelcnn`` and ``gated-pixelcnn`` (class-conditional) with their default configs on
the digits shape (1x8x8, 17 levels, 10 classes), random weights (the speed does not depend on
training); batch 1 and 64. ``--small``: tiny models on 1x4x4, batch 1 and 4 (a smoke run, not a
measurement). Each figure is the median of ``--repeats`` timed ``model.sample(n, sampler=...)``
calls after ``--warmup`` untimed ones, all in this process. The ``same samples`` column checks
that both samplers return the same images for the same seed. Prints a markdown table and writes
``benchmarks/results/pixel_sampling_<machine>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import RESULTS, devices, machine  # noqa: E402

import gmcore as gm  # noqa: E402
from gmcore.models.autoregressive import GatedPixelCNN, PixelCNN  # noqa: E402
from gmcore.models.base import DataInfo  # noqa: E402

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
SMALL = DataInfo((1, 4, 4), 5, "tiny", num_classes=3)
MODELS = {"pixelcnn": (PixelCNN, {}, dict(channels=6, blocks=1, out_hidden=6)),
          "gated-pixelcnn": (GatedPixelCNN, {}, dict(channels=4, layers=2, out_hidden=6))}


def _parse(argv=None):
    p = argparse.ArgumentParser(description="naive vs fast pixel sampling, samples/s")
    p.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    p.add_argument("--repeats", type=int, default=3, help="timed sample calls per figure")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--small", action="store_true", help="tiny models and batches: a smoke run")
    p.add_argument("--no-save", action="store_true", help="print only")
    return p.parse_args(argv)


def _model(name, small, device):
    cls, full, tiny = MODELS[name]
    gm.manual_seed(0)
    model = cls(cls.Config(**(tiny if small else full)), SMALL if small else DIGITS)
    if name == "gated-pixelcnn":   # the label embedding starts at zero: give it weights to use
        with gm.no_grad():
            model.label_bias.weight.data[...] = gm.randn(*model.label_bias.weight.shape).data
    return model.to(device)


def _time(call, device, repeats, warmup):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        if device != "cpu":
            gm.cuda.synchronize()
        t = time.perf_counter()
        out = call()
        if device != "cpu":
            gm.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def run(args):
    rows = []
    for device in devices(args.device):
        for name in MODELS:
            model = _model(name, args.small, device)
            for n in ((1, 4) if args.small else (1, 64)):
                per = {}
                for sampler in ("naive", "fast"):
                    def call(model=model, n=n, sampler=sampler, device=device):
                        return model.sample(n, generator=gm.Generator(device=device).manual_seed(0),
                                            sampler=sampler).cpu().numpy()
                    per[sampler] = _time(call, device, args.repeats, args.warmup)
                (tn, xn), (tf, xf) = per["naive"], per["fast"]
                rows.append({"device": device, "model": name, "batch": n,
                             "naive_samples_per_s": n / tn, "fast_samples_per_s": n / tf,
                             "speedup": tn / tf, "same_samples": bool(np.array_equal(xn, xf))})
    return rows


def markdown(rows):
    lines = ["| device | model | batch | naive samples/s | fast samples/s | speed-up | same samples |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['device']} | {r['model']} | {r['batch']} | {r['naive_samples_per_s']:.2f} | "
                     f"{r['fast_samples_per_s']:.2f} | {r['speedup']:.1f}x | "
                     f"{'yes' if r['same_samples'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None):
    args = _parse(argv)
    rows = run(args)
    table = markdown(rows)
    where = machine()
    size = "tiny models on 1x4x4 (smoke run)" if args.small else "default configs on digits 1x8x8"
    print(f"Pixel sampling, naive vs fast, {size}, {where}\n")
    print(table)
    if not args.no_save:
        RESULTS.mkdir(exist_ok=True)
        doc = {"machine": where, "threads": os.environ.get("OMP_NUM_THREADS"), "repeats": args.repeats,
               "rows": rows}
        for suffix, text in ((".json", json.dumps(doc, indent=1)), (".md", table + "\n")):
            tmp = RESULTS / f".pixel_sampling_{where}{suffix}.tmp"
            tmp.write_text(text)
            tmp.replace(RESULTS / f"pixel_sampling_{where}{suffix}")
    if not all(r["same_samples"] for r in rows):
        raise SystemExit("the fast and naive samplers drew different samples")


if __name__ == "__main__":
    main()
