"""parallel-wavenet: the student flow's exact log-density against the change of variables, its
causality (x_t depends on z_<=t only), the step-by-step inverse, the teacher's continuous
relaxation against the teacher on the code grid, the power loss against NumPy's FFT, clear
errors for a missing or wrong base run, and a few CLI steps on a tiny teacher with sampling,
evaluation and a bit-exact resume."""
import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import gmcore as gm
import gmcore.nn.functional as F
from gmcore import cli, models, train
from gmcore.cli_train import parse_train_args
from gmcore.models.autoregressive._parallel_wavenet_flow import IAFStudent, logistic_noise
from gmcore.models.autoregressive._parallel_wavenet_power import (average_power, log_power_loss, loudness_loss,
                                                                  power_loss, spectrum_loss)
from gmcore.models.autoregressive._parallel_wavenet_teacher import (continuous_input, continuous_outputs,
                                                                    mixture_log_density, to_axis)
from gmcore.models.autoregressive.parallel_wavenet import ParallelWaveNet
from gmcore.models.autoregressive.wavenet import WaveNet
from gmcore.models.base import DataInfo
from resume_checks import check_crash_resume

pytest.importorskip("safetensors")

TINY_TEACHER = ["--residual-channels", "4", "--gate-channels", "4", "--skip-channels", "8",
                "--head-channels", "8", "--layers", "3", "--stacks", "1", "--mixtures", "2",
                "--clip-length", "160"]
TINY_STUDENT = ["--flows", "2", "--channels", "4", "--gate-channels", "4", "--skip-channels", "4",
                "--head-channels", "4", "--layers", "2", "--fft-size", "32", "--ce-samples", "2",
                "--clip-length", "160"]
FAST = ["--batch-size", "2", "--eval-every", "0", "--no-progress", "--no-sample-quality"]


def _student(flows=3, dtype=gm.float64, seed=0):
    """A float64 student with random (not identity-like) weights."""
    gm.manual_seed(seed)
    st = IAFStudent(flows=flows, channels=4, gate_channels=3, skip_channels=5, head_channels=4, layers=3)
    st = st.to(dtype=dtype)
    rng = np.random.default_rng(seed)
    for p in st.parameters():
        p.data[...] = rng.normal(0, 0.4, p.shape)
    return st


def _teacher(output="dlml", length=24, **kw):
    gm.manual_seed(0)
    cfg = dict(residual_channels=5, gate_channels=3, skip_channels=6, head_channels=7, layers=3,
               stacks=1, mixtures=2, output=output, input_kernel=3)
    cfg.update(kw)
    return WaveNet(WaveNet.Config(**cfg), DataInfo((length,), 256, "audio")).to(dtype=gm.float64)


def test_registered():
    spec = models.get("parallel-wavenet")
    assert (spec.family, spec.dataset, spec.cls) == ("autoregressive", "audio", ParallelWaveNet)
    assert ParallelWaveNet.base_kinds == ("audio-density",) and WaveNet.latent_kind == "audio-density"


def test_log_density_is_the_change_of_variables():
    """log p_S(x) = sum log p_logistic(z) - log |det dx/dz|, the Jacobian by autograd, on T = 6;
    the Jacobian is lower triangular (x_t depends on z_<=t), its diagonal the composed scale."""
    st, T = _student(), 6
    z = logistic_noise((1, T), generator=gm.Generator().manual_seed(1), dtype=gm.float64)
    z.requires_grad_()
    x, mean, log_scale = st(z)
    jac = np.stack([gm.autograd.grad(x[0, t], [z], retain_graph=True)[0].numpy()[0] for t in range(T)])
    assert np.all(np.triu(jac, 1) == 0)                                 # causal
    np.testing.assert_allclose(np.diag(jac), np.exp(log_scale.detach().numpy()[0]), rtol=1e-12)
    zn = z.detach().numpy()[0]
    log_pz = np.sum(-zn - 2 * np.log1p(np.exp(-zn)))
    expected = log_pz - np.linalg.slogdet(jac)[1]
    got = st.log_prob_of_noise(z.detach(), log_scale.detach()).numpy()[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # x = z * S + M with M, S functions of z_<t
    np.testing.assert_allclose(x.detach().numpy(), (mean + log_scale.exp() * z).detach().numpy(), atol=1e-14)
    # the sequential inverse gives back z and the same density
    with gm.no_grad():
        z_back, log_p = st.inverse(x.detach())
    np.testing.assert_allclose(z_back.numpy(), z.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(log_p.numpy()[0], expected, rtol=1e-10)


def test_causal_sample_t_depends_on_noise_up_to_t_only():
    st, T = _student(flows=4, seed=3), 40
    z = logistic_noise((2, T), generator=gm.Generator().manual_seed(2), dtype=gm.float64)
    with gm.no_grad():
        x, mean, log_scale = (a.numpy() for a in st(z))
        for t in (0, 7, 25, 39):
            z2 = z.numpy().copy()
            z2[:, t] += 1.5
            x2, mean2, ls2 = (a.numpy() for a in st(gm.tensor(z2)))
            assert np.array_equal(x2[:, :t], x[:, :t]), t                   # before t: untouched
            assert np.all(x2[:, t] != x[:, t])                              # x_t moves with z_t ...
            assert np.array_equal(mean2[:, :t + 1], mean[:, :t + 1])        # ... but not its logistic
            assert np.array_equal(ls2[:, :t + 1], log_scale[:, :t + 1])
            if t + 1 < T:
                assert not np.allclose(x2[:, t + 1:], x[:, t + 1:])


def test_teacher_relaxation_equals_the_teacher_on_the_grid():
    teacher = _teacher()
    codes = gm.tensor(np.random.default_rng(0).integers(1, 255, (2, 24)))
    y = to_axis(codes, 256, gm.float64)
    with gm.no_grad():
        np.testing.assert_allclose(continuous_input(teacher.inp, y).numpy(), teacher.inp(codes).numpy(),
                                   atol=1e-14)
        params = teacher(codes)
        np.testing.assert_allclose(continuous_outputs(teacher, y).numpy(), params.numpy(), atol=1e-12)
        # interior bins: log P(bin) ~ log pdf(center) + log(width); exact to O(width^2)
        lp = mixture_log_density(params, y).numpy()
        nll = F.discretized_logistic_mixture_nll(y, params, num_bins=256).numpy()
    np.testing.assert_allclose(-(lp.sum(1) + 24 * np.log(2 / 255)), nll, rtol=1e-3)
    # between two codes the input layer interpolates: the midpoint reads the mean of the rows
    mid = y + 1.0 / 255
    with gm.no_grad():
        h_mid = continuous_input(teacher.inp, mid).numpy()
        h_mean = 0.5 * (teacher.inp(codes).numpy() + teacher.inp(codes + 1).numpy())
    np.testing.assert_allclose(h_mid, h_mean, atol=1e-12)
    # and the gradient reaches the inputs y_<t through it
    yg = y.detach().requires_grad_()
    (g,) = gm.autograd.grad(continuous_outputs(teacher, yg)[:, :, 10].sum(), [yg])
    assert np.all(g.numpy()[:, 10:] == 0) and np.any(g.numpy()[:, :10] != 0)


def test_power_loss_matches_numpy_fft():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 300)) * 0.3, rng.standard_normal((3, 300)) * 0.2
    n_fft, hop = 64, 16

    def np_power(x):
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
        frames = np.stack([x[:, s:s + n_fft] for s in range(0, x.shape[1] - n_fft + 1, hop)], 1)
        spec = np.fft.rfft(frames * window, axis=-1) / window.sum()
        return (np.abs(spec) ** 2).mean((0, 1))

    got = average_power(gm.tensor(a), n_fft, hop).numpy()
    np.testing.assert_allclose(got, np_power(a), rtol=1e-10, atol=1e-16)
    loss = power_loss(gm.tensor(a), gm.tensor(b), n_fft, hop).item()
    np.testing.assert_allclose(loss, ((np_power(a) - np_power(b)) ** 2).sum(), rtol=1e-10)
    with pytest.raises(ValueError, match="--fft-size"):
        average_power(gm.tensor(a[:, :40]), n_fft, hop)
    # the log form: mean over bins of the squared log-ratio, floored at 1e-3 x the data's mean bin
    pa, pb = np_power(a), np_power(b)
    eps = 1e-3 * pb.mean()
    got = log_power_loss(gm.tensor(a), gm.tensor(b), n_fft, hop).item()
    np.testing.assert_allclose(got, np.mean((np.log(pa + eps) - np.log(pb + eps)) ** 2), rtol=1e-10)
    # scale-aware: a 100x quieter copy pays (log 100)^2 in every loud bin, the linear loss ~nothing
    quiet = gm.tensor(b * 0.1)
    assert log_power_loss(quiet, gm.tensor(b), n_fft, hop).item() > 0.9 * np.log(100) ** 2
    assert power_loss(quiet, gm.tensor(b), n_fft, hop).item() < np.sum(pb ** 2)
    assert log_power_loss(gm.tensor(b), gm.tensor(b), n_fft, hop).item() == 0
    # loudness: the squared log-ratio of the total powers only
    got = loudness_loss(gm.tensor(a), gm.tensor(b), n_fft, hop).item()
    np.testing.assert_allclose(got, np.log(pa.sum() / pb.sum()) ** 2, rtol=1e-10)
    np.testing.assert_allclose(loudness_loss(quiet, gm.tensor(b), n_fft, hop).item(), np.log(100) ** 2,
                               rtol=1e-10)


def test_loss_gives_gradients_to_the_student_only():
    info = DataInfo((24,), 256, "audio")
    teacher = _teacher()
    pw = ParallelWaveNet(ParallelWaveNet.Config(flows=2, channels=4, gate_channels=4, skip_channels=4,
                                                head_channels=4, layers=2, fft_size=8, power_weight=1.0,
                                                power_target="data", loudness_weight=0.0), info,
                         base=teacher).to(dtype=gm.float64)
    # open the zero-initialised last layers so every student weight gets a gradient
    for flow in pw.student.flows:
        flow.out2.weight.data[...] = 0.01
    loss, logs = pw.loss((gm.tensor(np.random.default_rng(1).integers(0, 256, (2, 24))),))
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    for name, p in pw.student.named_parameters():
        if ".blocks.1.res_" in name:   # the last block's residual output feeds nothing (only its skip)
            continue
        assert p.grad is not None and np.any(p.grad.numpy() != 0), name
    assert np.isclose(logs["kl"], logs["cross_entropy"] - logs["entropy"])
    assert np.isclose(loss.item(), logs["kl"] + logs["power"])
    # --power-loss picks the log-spectral (default) or the paper's linear form
    codes = gm.tensor(np.random.default_rng(1).integers(0, 256, (2, 24)))
    for kind, fn in (("log", log_power_loss), ("loudness", loudness_loss), ("linear", power_loss)):
        pw.config.power_loss = kind
        gm.manual_seed(5)
        _, logs = pw.loss((codes,))
        gm.manual_seed(5)
        z = pw._noise(2, 24)
        with gm.no_grad():
            x = pw.student(z)[0]
        assert np.isclose(logs["power"], fn(x, to_axis(codes, 256, gm.float64), 8, 2).item(), rtol=1e-10), kind


def test_power_target_teacher_matches_the_teachers_own_samples():
    """--power-target teacher: the reference spectrum is that of the teacher's samples drawn from
    seed 0, the same in every model built on the teacher (so a resumed run computes it again
    exactly) and drawn once per model; --loudness-weight adds the loudness term against it."""
    info = DataInfo((24,), 256, "audio")
    teacher = _teacher()
    config = ParallelWaveNet.Config(flows=2, channels=4, gate_channels=4, skip_channels=4, head_channels=4,
                                    layers=2, fft_size=8, power_weight=1.0, power_target="teacher",
                                    power_reference_clips=5, loudness_weight=0.0)
    pw = ParallelWaveNet(config, info, base=teacher).to(dtype=gm.float64)
    codes = gm.tensor(np.random.default_rng(1).integers(0, 256, (2, 24)))
    with gm.no_grad():
        clips = teacher.sample(5, gm.Generator().manual_seed(0), length=24)
    want = average_power(to_axis(clips, 256, gm.float64), 8, 2).numpy()
    ref = pw._reference_power(codes)
    np.testing.assert_array_equal(ref.numpy(), want)
    assert pw._reference_power(codes) is ref                       # cached: the teacher is not rerun
    other = ParallelWaveNet(config, info, base=teacher).to(dtype=gm.float64)
    np.testing.assert_array_equal(other._reference_power(codes).numpy(), want)
    # the loss uses it in place of the batch's spectrum
    gm.manual_seed(5)
    _, logs = pw.loss((codes,))
    gm.manual_seed(5)
    with gm.no_grad():
        x = pw.student(pw._noise(2, 24))[0]
    assert np.isclose(logs["power"], spectrum_loss("linear", average_power(x, 8, 2), ref).item(), rtol=1e-12)
    assert not np.isclose(logs["power"], power_loss(x, to_axis(codes, 256, gm.float64), 8, 2).item())
    # the loudness barrier: its own term, against the same reference, added with its weight
    pw.config.loudness_weight = 0.5
    gm.manual_seed(5)
    loss, logs = pw.loss((codes,))
    assert np.isclose(logs["loudness"], spectrum_loss("loudness", average_power(x, 8, 2), ref).item(), rtol=1e-12)
    assert np.isclose(loss.item(), logs["kl"] + logs["power"] + 0.5 * logs["loudness"], rtol=1e-12)


def test_base_errors_name_the_problem(tmp_path):
    info = DataInfo((24,), 256, "audio")
    with pytest.raises(ValueError, match="--base-run"):
        ParallelWaveNet(ParallelWaveNet.Config(), info)
    with pytest.raises(ValueError, match="'audio-density'.*no latents"):
        ParallelWaveNet(ParallelWaveNet.Config(), info, base=gm.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="--output dlml"):
        ParallelWaveNet(ParallelWaveNet.Config(base_run="runs/w"), info, base=_teacher("softmax"))
    with pytest.raises(ValueError, match="unconditional"):
        ParallelWaveNet(ParallelWaveNet.Config(), info, base=_teacher(num_classes=3))
    with pytest.raises(ValueError, match="--fft-size 256 is longer than the clips"):
        ParallelWaveNet(ParallelWaveNet.Config(), info, base=_teacher())
    name, tcfg, mcfg = parse_train_args("parallel-wavenet", ["--out", str(tmp_path / "pw"),
                                                             "--base-run", str(tmp_path / "nothing")])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)
    name, tcfg, mcfg = parse_train_args("parallel-wavenet", ["--out", str(tmp_path / "pw2")])
    with pytest.raises(ValueError, match="--base-run"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)


def _train_teacher(out, output="dlml", steps=2):
    name, tcfg, mcfg = parse_train_args("wavenet", ["--out", str(out), "--steps", str(steps), "--output",
                                                    output, *TINY_TEACHER, *FAST, "--num-samples", "0"])
    train.train(name, tcfg, mcfg, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    return _train_teacher(tmp_path_factory.mktemp("pw") / "wavenet", steps=3)


def test_a_softmax_wavenet_run_is_refused(tmp_path):
    run = _train_teacher(tmp_path / "softmax", "softmax", steps=1)
    name, tcfg, mcfg = parse_train_args("parallel-wavenet", ["--out", str(tmp_path / "pw"), "--base-run",
                                                             str(run), *TINY_STUDENT, *FAST])
    with pytest.raises(ValueError, match=f"--base-run {run}: .*--output dlml.*softmax"):
        train.train(name, tcfg, mcfg, log=lambda *a: None)


def test_cli_run_reports_samples_and_evaluates(teacher_run, tmp_path):
    base, out = tmp_path / "teacher", tmp_path / "pw"
    shutil.copytree(teacher_run, base)
    assert cli.main(["train", "parallel-wavenet", "--base-run", str(base), "--out", str(out),
                     "--steps", "3", *TINY_STUDENT, *FAST, "--samples", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["nll_kind"].startswith("bound") and m["unit"] == "sample" and np.isfinite(m["test_bits"])
    for key in ("teacher_test_bits_per_sample", "student_samples_teacher_bits_per_sample",
                "student_samples_own_bits_per_sample", "student_samples_per_s", "teacher_samples_per_s",
                "test_power", "student_samples_power", "student_vs_test_power_ratio",
                "student_samples_log_spectral_distance", "teacher_samples_teacher_bits_per_sample",
                "teacher_samples_power"):
        assert np.isfinite(m[key]) and m[key] > 0, key
    assert m["speedup"] == pytest.approx(m["student_samples_per_s"] / m["teacher_samples_per_s"], rel=0.02)
    assert m["student_vs_teacher_ratio"] == pytest.approx(
        m["student_samples_teacher_bits_per_sample"] / m["teacher_test_bits_per_sample"])
    assert (out / "samples.wav").exists() and m["sample_clips"] == 2
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["base_run"]["model_name"] == "wavenet" and cfg["base_run"]["run"] == str(base)
    npy = tmp_path / "s.npy"
    assert cli.main(["sample", str(out), "--n", "3", "--out", str(npy)]) == 0
    s = np.load(npy)
    assert s.shape == (3, 160) and s.dtype == np.int64 and s.min() >= 0 and s.max() <= 255
    # the checkpoint holds the teacher: evaluation never reads the base run again
    shutil.rmtree(base)
    assert cli.main(["eval", str(out)]) == 0


@pytest.mark.parametrize("target", ["data", "teacher"])
def test_resume_is_bit_exact(teacher_run, tmp_path, monkeypatch, target):
    check_crash_resume(tmp_path, monkeypatch, "parallel-wavenet", ParallelWaveNet,
                       ["--base-run", str(teacher_run), *TINY_STUDENT, *FAST, "--num-samples", "0",
                        "--power-target", target],
                       steps=3, ckpt_every=1, crash_at=3)


FLOOR = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "parallel_wavenet_floor.py"


@pytest.mark.skipif(not FLOOR.exists(), reason="benchmarks/ not next to tests/")
def test_floor_benchmark_finds_the_closest_logistic(teacher_run, tmp_path):
    """benchmarks/parallel_wavenet_floor.py: a logistic target is fitted to KL ~ 0 with its own
    cross-entropy equal to its entropy, a two-mode mixture is not; the script runs on a CLI run."""
    spec = importlib.util.spec_from_file_location("parallel_wavenet_floor", FLOOR)
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    grid = floor.GRID[None, :, None]

    def logistic(mu, s):
        z = (grid - mu) / s
        return -z - 2 * np.logaddexp(0, -z) - np.log(s)

    target = np.concatenate([logistic(0.1, 0.05), logistic(-0.3, 0.02)], axis=2)       # (1, G, 2)
    kl, ce = floor.best_logistics(target, iters=1500)
    entropy = -(np.exp(target) * target).sum(1) * (grid[0, 1, 0] - grid[0, 0, 0])
    np.testing.assert_allclose(kl, 0, atol=2e-3)
    np.testing.assert_allclose(ce, entropy, atol=2e-3)
    two_modes = np.logaddexp(logistic(-0.5, 0.03), logistic(0.5, 0.03)) + np.log(0.5)
    kl, _ = floor.best_logistics(two_modes, iters=1500)
    assert kl[0, 0] > 0.5 * np.log(2)      # one logistic on one mode pays ~log 2

    out = tmp_path / "pw"
    assert cli.main(["train", "parallel-wavenet", "--base-run", str(teacher_run), "--out", str(out),
                     "--steps", "2", *TINY_STUDENT, *FAST, "--num-samples", "0"]) == 0
    proc = subprocess.run([sys.executable, str(FLOOR), str(out), "--clips", "1", "--no-save"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| student samples | the student |" in proc.stdout and "best single logistic" in proc.stdout
