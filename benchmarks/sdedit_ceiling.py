"""What a perfect model of the training digits would score on SDEdit's class retention.

    python benchmarks/sdedit_ceiling.py [--strengths 0.3 0.4 0.5] [--seeds 16] [--no-save]

``gmcore edit RUN --from-test 297 --strength s`` counts how often the digits classifier reads an
edited test digit as its label. How much of that a network can reach is set by the data and
the noise schedule: at strength s the digit is noised to ``t0 = s T`` and only
``sqrt(abar_t0)`` of it is left. This script replaces the network by the ideal denoiser of
the 1500 training digits (:class:`gmcore.models.diffusion.ideal_denoiser.EmpiricalDenoiser`,
the exact ``E[x0 | x_t]`` when the data are those digits) and runs the same edit as the
command (``ddpm``'s default schedules with T = 1000, DDIM eta 0 over 50 trailing steps, x0
clamped) on all 297 test digits, with ``--seeds`` noise draws. Two figures per schedule and
strength:

* ``ideal edit``: the classifier's agreement with the labels after the ideal edit, the
  figure ``gmcore edit`` reports, for a model that has learnt the training digits exactly;
* ``Bayes``: the accuracy of the most probable class under the ideal posterior over the
  training digits given the noised x_t0: no editor that sees only x_t0 can keep the class of
  more digits than that if the data are the training digits.

Both are ceilings for a model of the training data, not of the unknown true distribution of
digits; a network generalises between training digits and can land above or below them. Writes
``benchmarks/results/sdedit_ceiling.md``.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

import gmcore as gm
from gmcore.data import get_dataset
from gmcore.feature_metrics import DigitsFeatures
from gmcore.io import atomic_write_text
from gmcore.models.base import DataInfo
from gmcore.models.diffusion import samplers
from gmcore.models.diffusion.ddpm import DDPM, DDPMConfig
from gmcore.models.diffusion.ideal_denoiser import EmpiricalDenoiser

DIGITS = DataInfo((1, 8, 8), 17, "digits", num_classes=10)
SCHEDULES = ("linear", "cosine")


def _images(split):
    data = get_dataset("digits", split=split)
    x, y = data.arrays[0], data.arrays[1]
    return (x / (data.num_levels - 1)).astype(np.float64), np.asarray(y)


def ceiling(schedule, strength, seeds, train_x, train_y, test_x, test_y, classifier):
    """(ideal-edit class agreement, Bayes accuracy) per seed, for one schedule and strength."""
    model = DDPM(DDPMConfig(schedule=schedule), DIGITS)          # its diffusion and data mapping
    d = model.diffusion
    ideal = EmpiricalDenoiser(d, model.to_diffusion(gm.tensor(train_x)))
    x0 = model.to_diffusion(gm.tensor(test_x))
    kept_t = samplers.spaced_timesteps(d.num_timesteps, 50, "trailing")
    t0 = int(kept_t[kept_t <= round(strength * d.num_timesteps) - 1][-1])
    class_of_point = np.eye(10)[train_y]                                    # (N, 10)
    edits, bayes = [], []
    for seed in range(seeds):
        edited = samplers.sdedit(d, ideal, x0, strength, steps=50, spacing="trailing",
                                 generator=gm.Generator().manual_seed(seed), clip_x0=model.clip_x0)
        edits.append(classifier.accuracy(model.from_diffusion(edited).numpy().astype(np.float32), test_y))
        # the same noise draw as the edit's first step, to ask what x_t0 says of the class
        noise = gm.randn(*x0.shape, dtype=x0.dtype, generator=gm.Generator().manual_seed(seed))
        t = gm.full((x0.shape[0],), t0, dtype="int64")
        class_post = ideal.posterior(d.q_sample(x0, t, noise), t).numpy() @ class_of_point
        bayes.append(float((class_post.argmax(1) == test_y).mean()))
    return t0, float(np.sqrt(d.schedule.alphas_cumprod[t0])), np.array(edits), np.array(bayes)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strengths", type=float, nargs="+", default=[0.3, 0.4, 0.5])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)

    train_x, train_y = _images("train")
    test_x, test_y = _images("test")
    classifier = DigitsFeatures.get()
    rows = ["| schedule | strength | t0 | sqrt(abar_t0) | ideal edit: class kept | Bayes: class of x_t0 |",
            "|---|---|---|---|---|---|"]
    for schedule in SCHEDULES:
        for s in args.strengths:
            t0, signal, edits, bayes = ceiling(schedule, s, args.seeds, train_x, train_y, test_x, test_y,
                                               classifier)
            se = lambda a: a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else float("nan")   # noqa: E731
            rows.append(f"| {schedule} | {s} | {t0} | {signal:.3f} | {edits.mean():.3f} +- {se(edits):.3f} "
                        f"| {bayes.mean():.3f} +- {se(bayes):.3f} |")
            print(rows[-1], flush=True)
    inputs = classifier.accuracy(test_x.astype(np.float32), test_y)
    text = "\n".join([
        "# SDEdit class retention of the ideal denoiser of the training digits",
        "",
        f"`python benchmarks/sdedit_ceiling.py --seeds {args.seeds}`: {len(test_y)} test digits, "
        f"{len(train_y)} training digits as the data, DDIM eta 0 over 50 trailing steps; mean over "
        f"{args.seeds} noise draws +- its standard error. The classifier reads {inputs:.3f} of the "
        "unedited test digits right.",
        "", *rows, ""])
    if not args.no_save:
        out = Path(__file__).parent / "results" / "sdedit_ceiling.md"
        atomic_write_text(out, text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
