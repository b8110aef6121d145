"""The kernel benchmark scripts run end to end (tiny sizes, nothing saved): a smoke test, not a
measurement. Speed targets live in the scripts' output, never in tests."""
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCH.glob("bench_*.py")
                 if p.name not in ("bench_engine.py", "bench_train.py", "bench_glow.py",
                                   "bench_vqvae.py", "bench_dcgan.py", "bench_distributed.py",
                                   "bench_pixel_sampling.py"))


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
@pytest.mark.parametrize("script", SCRIPTS)
def test_kernel_benchmark_smoke(script):
    proc = subprocess.run([sys.executable, str(BENCH / script), "--small", "--no-save", "--device", "cpu",
                           "--repeats", "2", "--warmup", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| implementation |" in proc.stdout          # the markdown summary was printed
    assert "reference" in proc.stdout


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
def test_bench_train_smoke():
    proc = subprocess.run([sys.executable, str(BENCH / "bench_train.py"), "--steps", "2", "--rounds", "1",
                           "--no-save"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| logistic |" in proc.stdout and "| bernoulli |" in proc.stdout


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
@pytest.mark.parametrize("script, title", [("bench_glow.py", "Glow step"),
                                           ("bench_vqvae.py", "VQ-VAE training step"),
                                           ("bench_dcgan.py", "DCGAN training step")])
def test_model_step_benchmark_smoke(script, title):
    """The model-step benchmarks (benchmarks/_step_bench.py drives both) run end to end."""
    proc = subprocess.run([sys.executable, str(BENCH / script), "--small", "--no-save",
                           "--device", "cpu", "--repeats", "2", "--warmup", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| implementation |" in proc.stdout and title in proc.stdout
    impls = ("gmcore", "gmcore-reference") + (() if "torch not installed" in proc.stdout
                                              else ("torch",))
    for impl in impls:
        assert f"| {impl} |" in proc.stdout


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
def test_bench_pixel_sampling_smoke():
    """Naive against fast pixel sampling, tiny models: both run and draw the same samples."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench_pixel_sampling.py"), "--small", "--no-save",
                           "--device", "cpu", "--repeats", "1", "--warmup", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| cpu | pixelcnn | 1 |", "| cpu | gated-pixelcnn | 4 |"):
        assert row in proc.stdout, proc.stdout
    assert "| NO |" not in proc.stdout


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
def test_bench_distributed_smoke():
    """One and two MPI ranks of a tiny run each, and the table on paper."""
    pytest.importorskip("mpi4py")
    proc = subprocess.run([sys.executable, str(BENCH / "bench_distributed.py"), "--steps", "4", "--log-every", "1",
                           "--batch-size", "16", "--no-save"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("| vae --arch conv | 2 |", "| dcgan | 2 |", "| dcgan | 64 | InfiniBand"):
        assert row in proc.stdout, proc.stdout


@pytest.mark.skipif(not BENCH.exists(), reason="benchmarks/ not next to tests/")
def test_time_models_smoke():
    proc = subprocess.run([sys.executable, str(BENCH / "time_models.py"), "--only", "ppca", "--steps", "2",
                           "--no-save"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| `gmcore train ppca` | 3.704 bits/dim |" in proc.stdout, proc.stdout
