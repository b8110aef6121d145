"""Watching and comparing runs: --tensorboard event files (read back by TensorBoard's own reader),
`gmcore runs`, `gmcore report` (parsed HTML; rendered in headless Chromium where installed), and
the sampling progress bars."""
import base64
import html.parser
import json
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, train
from gmcore.cli_train import parse_train_args

pytest.importorskip("safetensors")

FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "16"]
VAE = ["--latent-dim", "4", "--hidden", "32", "--iw-samples", "4"]


def _train(out, model, *flags, extra=()):
    name, tcfg, mcfg = parse_train_args(model, ["--out", str(out), *FAST, *extra, *flags])
    return train.train(name, tcfg, mcfg, log=lambda *a: None)


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A folder of runs in every state: three finished (a VAE with --tensorboard, a GAN, a flow on
    2-D points), one interrupted, one that never started and one unreadable."""
    root = tmp_path_factory.mktemp("runs")
    _train(root / "vae", "vae", "--steps", "6", "--eval-every", "3", "--log-every", "2", "--tensorboard",
           "--tensorboard-histograms", "3", extra=VAE)
    _train(root / "gans" / "dcgan", "dcgan", "--steps", "2", "--eval-every", "0", "--log-every", "1")
    _train(root / "realnvp", "realnvp", "--dataset", "moons", "--steps", "3", "--eval-every", "0",
           "--log-every", "1")
    shutil.copytree(root / "vae", root / "stopped")
    for name in ("metrics.json", "loss_curve.png", "samples.png"):   # written at the end only
        (root / "stopped" / name).unlink()
    (root / "fresh").mkdir()
    shutil.copy(root / "vae" / "config.json", root / "fresh" / "config.json")
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{not json")
    (root / "not-a-run").mkdir()
    return root


# ---- TensorBoard ---------------------------------------------------------------------------

def _events(run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_events_hold_the_metrics_rows_samples_histograms_and_config(zoo):
    acc = _events(zoo / "vae")
    rows = _rows(zoo / "vae")
    train_rows = [r for r in rows if r["split"] == "train"]
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in train_rows] == [2, 4, 6]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in train_rows], rel=1e-6)
    tests = [r for r in rows if r["split"] == "test"]
    assert [e.value for e in acc.Scalars("test/test_bits")] == pytest.approx([r["test_bits"] for r in tests])
    images = acc.Images("samples")
    assert [e.step for e in images] == [3, 6] and images[0].width > 8 * 4   # a grid of 8x8 digits
    tags = acc.Tags()
    assert "weights/encoder.0.weight" in tags["histograms"] and "grads/encoder.0.weight" in tags["histograms"]
    assert [e.step for e in acc.Histograms("weights/encoder.0.weight")] == [3, 6]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"model": "vae"' in text


def test_tensorboard_does_not_change_the_training_path(zoo, tmp_path):
    _train(tmp_path / "plain", "vae", "--steps", "6", "--eval-every", "3", "--log-every", "2", extra=VAE)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows]   # noqa: E731
    assert strip(_rows(tmp_path / "plain")) == strip(_rows(zoo / "vae"))


def test_resumed_run_drops_the_events_of_redone_steps(tmp_path, monkeypatch):
    # every writer opens its file in the same second, as in a quick crash-and-resume: tensorboardX
    # names files by the second, so without a suffix of our own each resume truncated the last file
    monkeypatch.setattr(time, "time", lambda: 1.8e9)
    run, keep = tmp_path / "run", tmp_path / "step2"
    flags = ["--eval-every", "0", "--log-every", "1", "--tensorboard"]
    _train(run, "vae", "--steps", "2", *flags, extra=VAE)
    shutil.copytree(run, keep)
    _train(run, "vae", "--steps", "3", "--resume", *flags, extra=VAE)   # logs step 3 ...
    for name in ("last.safetensors", "last.json"):                     # ... then loses it:
        shutil.copy(keep / name, run / name)                            # back to step 2's checkpoint
    _train(run, "vae", "--steps", "5", "--resume", *flags, extra=VAE)
    loss = _events(run).Scalars("train/loss")
    rows = [r for r in _rows(run) if r["split"] == "train"]
    assert [e.step for e in loss] == [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in rows], rel=1e-6)


def test_tensorboard_without_tensorboardx_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    rc = cli.main(["train", "vae", "--steps", "1", "--tensorboard", "--out", str(tmp_path / "r"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0
    assert "--tensorboard needs tensorboardX" in err and "pip install" in err
    assert not (tmp_path / "r").exists()   # refused before the folder was claimed


# ---- gmcore runs ---------------------------------------------------------------------------

def test_runs_table_lists_every_run_with_its_figure_and_state(zoo):
    from gmcore.runs import find_runs
    runs = {r.path: r for r in find_runs(zoo)}
    assert set(runs) == {"vae", "gans/dcgan", "realnvp", "stopped", "fresh", "broken"}
    vae = runs["vae"]
    final = json.loads((zoo / "vae" / "metrics.json").read_text())
    assert (vae.model, vae.family, vae.dataset, vae.step, vae.steps) == ("vae", "latent", "digits", 6, 6)
    assert vae.figure == final["test_bits"] and vae.figure_unit == "bits/dim" and vae.state == "finished"
    assert vae.figure_kind.startswith("IWAE")
    assert vae.train_seconds == pytest.approx(sum(r["sec_per_step"] * 2 for r in _rows(zoo / "vae")
                                                  if r["split"] == "train"))
    gan = runs["gans/dcgan"]
    assert (gan.family, gan.figure, gan.figure_kind, gan.state) == ("gan", None, "none", "finished")
    flow = runs["realnvp"]
    assert flow.figure_unit == "nats" and flow.dataset == "moons"
    assert runs["stopped"].state == "interrupted" and runs["stopped"].figure_step == 6
    assert runs["fresh"].state == "not started"
    assert runs["broken"].state == "unreadable" and "config.json is not valid JSON" in runs["broken"].error


def test_runs_cli_table_sort_and_json(zoo, capsys):
    assert cli.main(["runs", str(zoo)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| run | model | family |")
    assert "| gans/dcgan | dcgan | gan | digits | 2 | none | none |" in out
    assert "unreadable: config.json is not valid JSON" in out
    assert cli.main(["runs", str(zoo), "--sort", "train-time", "--desc", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    times = [r["train_seconds"] for r in listed if r["train_seconds"] is not None]
    assert times == sorted(times, reverse=True) and len(times) == 4
    assert listed[-1]["train_seconds"] is None   # no value: last either way
    assert cli.main(["runs", str(zoo), "--sort", "colour"]) == 1
    assert "cannot sort by 'colour': the columns are run, model" in capsys.readouterr().err
    assert cli.main(["runs", str(zoo / "nowhere")]) == 1
    assert "is not a folder" in capsys.readouterr().err


def test_a_running_run_is_told_from_an_interrupted_one(zoo, tmp_path):
    from gmcore.runlock import RunLock
    from gmcore.runs import summarize
    run = tmp_path / "live"
    shutil.copytree(zoo / "stopped", run)
    with RunLock(run):
        assert summarize(run).state == "running"
    (run / "run.lock").write_text('{"pid": 1, "host": "gone"}')   # a dead run's stale lock
    assert summarize(run).state == "interrupted"


# ---- gmcore report -------------------------------------------------------------------------

class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a)
        if tag == "a":
            self.links.append(a["href"])

    def handle_data(self, data):
        self.text.append(data)


def _parse(path):
    page = _Page()
    page.feed(path.read_text("utf-8"))
    page.close()
    return page


def _check_images(page):
    for img in page.images:
        head, data = img["src"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/gif;base64")   # embedded: no file, no network
        raw = base64.b64decode(data, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" or raw[:4] == b"GIF8"


def test_report_is_a_self_contained_gallery_with_a_page_per_run(zoo, tmp_path, capsys):
    out = tmp_path / "site" / "report.html"
    assert cli.main(["report", str(zoo), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    index = _parse(out)
    text = " ".join(index.text)
    for family in ("latent", "gan", "flows"):
        assert family in text
    assert "unreadable: config.json is not valid JSON" in text
    _check_images(index)
    alts = [img["alt"] for img in index.images]
    for run in ("vae", "gans/dcgan"):
        assert f"{run}: samples.png" in alts and f"{run}: loss_curve.png" in alts
    assert "realnvp: density.png" in alts
    assert "stopped: loss curve (from metrics.jsonl)" in alts   # drawn for a run that wrote none
    pages = sorted(set(index.links))
    assert len(pages) == 6 and all(p.startswith("report_runs/") for p in pages)
    for link in pages:
        page = _parse(out.parent / link)
        _check_images(page)
        assert "../report.html" in page.links
    vae = _parse(out.parent / "report_runs" / "vae.html")
    assert any('"model": "vae"' in t for t in vae.text) and any("test_bits" in t for t in vae.text)
    assert {img["alt"] for img in vae.images} >= {"samples.png", "loss_curve.png"}
    with pytest.raises(ValueError, match="should end in .html"):
        from gmcore.report import write_report
        write_report(zoo, tmp_path / "report.txt")


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (Debian's chromium package)")
def test_report_renders_in_headless_chromium_with_every_image(zoo, tmp_path):
    out = tmp_path / "report.html"
    from gmcore.report import write_report
    write_report(zoo, out)
    # the same page with a probe that counts the images the browser decoded
    probe = tmp_path / "probe.html"
    probe.write_text(out.read_text().replace("</body>", (
        "<script>addEventListener('load', () => { const im = [...document.images];"
        "document.body.dataset.images = im.length;"
        "document.body.dataset.broken = im.filter(i => !(i.complete && i.naturalWidth > 0)).length; })"
        "</script></body>")))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([_chromium(), *flags, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([_chromium(), *flags, f"--user-data-dir={profile}", "--window-size=1200,1600",
                        f"--screenshot={tmp_path / 'shot.png'}", out.as_uri()], capture_output=True, timeout=120)
    expected = len(_parse(out).images)
    assert f'data-images="{expected}"' in dom and 'data-broken="0"' in dom, dom[:500]
    from PIL import Image
    shot = Image.open(tmp_path / "shot.png")
    assert shot.size == (1200, 1600) and len(np.unique(np.asarray(shot.convert("L")))) > 10   # not a blank page


# ---- progress bars -------------------------------------------------------------------------

def test_sampling_progress_bars_show_only_when_asked(capsys):
    from gmcore.models.autoregressive._pixel_layers import sample_pixels
    from gmcore.models.diffusion import samplers
    from gmcore.models.diffusion.gaussian_diffusion import GaussianDiffusion
    from gmcore.schedules import NoiseSchedule

    def pixels():
        return sample_pixels(lambda x, i, j, c: gm.zeros(2, 1) + 0.5, 2, (1, 4, 4), "cpu")

    d = GaussianDiffusion(NoiseSchedule.linear(50, 1e-3, 0.05))

    def chain():
        return samplers.ddim(d, lambda x, t: 0.1 * x, shape=(1, 1, 2, 2), steps=20,
                             generator=gm.Generator().manual_seed(0))

    plain = (pixels(), chain())
    assert capsys.readouterr().err == ""
    with gm.progress.show_progress():
        shown = (pixels(), chain())
    err = capsys.readouterr().err
    assert "pixels:" in err and "/16" in err and "denoising:" in err and "/20" in err
    for a, b in zip(plain, shown):   # the bar changes nothing drawn
        assert (a.numpy() == b.numpy()).all()
