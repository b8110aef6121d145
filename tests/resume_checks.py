"""The crash-and-resume check every model family uses: a run that dies hard between two
checkpoints, resumed, must repeat the uninterrupted run's training losses exactly."""
import json

import pytest

import gmcore as gm
from gmcore import train
from gmcore.cli_train import parse_train_args


def _train_losses(run_dir, key="loss"):
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if r["split"] == "train"]


def check_crash_resume(tmp_path, monkeypatch, model, model_cls, flags, steps=6, ckpt_every=3, crash_at=5,
                       method="loss", key="loss"):
    """Train ``model`` for ``steps`` with a checkpoint every ``ckpt_every``; train it again with
    ``model_cls.<method>`` (``loss``, or ``training_step`` for models with several optimizers)
    raising at call ``crash_at`` (no Ctrl-C handler runs), resume, and compare the logged
    training losses (the log key ``key``) with float equality."""
    flags = ["--steps", str(steps), "--log-every", "1", "--ckpt-every", str(ckpt_every), *flags]
    quiet = lambda *a: None  # noqa: E731
    name, tcfg, mcfg = parse_train_args(model, ["--out", str(tmp_path / "full"), *flags])
    train.train(name, tcfg, mcfg, log=quiet)

    real_loss, calls = getattr(model_cls, method), {"n": 0}

    def crash(self, *args):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise RuntimeError("power cut")
        return real_loss(self, *args)

    name, tcfg, mcfg = parse_train_args(model, ["--out", str(tmp_path / "part"), *flags])
    monkeypatch.setattr(model_cls, method, crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(name, tcfg, mcfg, log=quiet)
    monkeypatch.setattr(model_cls, method, real_loss)
    saved = (crash_at - 1) // ckpt_every * ckpt_every
    assert gm.io.load_checkpoint(tmp_path / "part" / "last")["step"] == saved
    tcfg.resume = True
    train.train(name, tcfg, mcfg, log=quiet)
    full, part = _train_losses(tmp_path / "full", key), _train_losses(tmp_path / "part", key)
    assert len(full) == steps and full == part          # exact equality, every step
