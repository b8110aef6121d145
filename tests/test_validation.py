"""--val-split / --patience: the held-out split, the best step's checkpoint and early stopping."""
import json
import math

import numpy as np
import pytest

import gmcore as gm
from gmcore import cli, train
from gmcore.cli_train import parse_train_args
from gmcore.data import CharText, Toy2D, get_dataset
from gmcore.data import validation_split
from gmcore.train import TrainConfig
from gmcore.validation import Validation

pytest.importorskip("safetensors")

FAST = ["--batch-size", "32", "--no-progress", "--no-sample-quality", "--num-samples", "16"]
SMALL_VAE = ["--latent-dim", "4", "--hidden", "32", "--iw-samples", "4"]
QUIET = lambda *a: None  # noqa: E731


def _rows(run_dir, split):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


# ---- the split -------------------------------------------------------------------------------
def test_array_split_is_disjoint_complete_seeded_and_keeps_the_type():
    data = get_dataset("digits")
    fit, val = validation_split(data, 0.1, seed=3)
    assert type(fit) is type(val) is type(data)
    assert (len(fit), len(val)) == (len(data) - round(0.1 * len(data)), round(0.1 * len(data)))
    assert fit.num_levels == val.num_levels == data.num_levels and fit.shape == data.shape

    def keys(ds):   # each image with its label, as bytes
        return [ds.arrays[0][i].tobytes() + ds.arrays[1][i].tobytes() for i in range(len(ds))]
    assert sorted(keys(fit) + keys(val)) == sorted(keys(data))     # a partition of the examples
    x, y = val.get_batch(np.arange(4))     # batches come out as the original's (scaled floats)
    assert x.dtype == np.float32 and x.max() <= 1.0 and y.dtype == np.int64
    again, _ = validation_split(data, 0.1, seed=3)
    other, _ = validation_split(data, 0.1, seed=4)
    assert np.array_equal(again.arrays[0], fit.arrays[0])
    assert not np.array_equal(other.arrays[0], fit.arrays[0])
    assert len(data) == len(get_dataset("digits"))          # the original is untouched


def test_toy_split_keeps_points_and_modes():
    data = Toy2D("8gaussians", n=200)
    fit, val = validation_split(data, 0.25, seed=0)
    assert fit.points.shape == (150, 2) and val.points.shape == (50, 2)
    assert np.array_equal(val.modes[0], data.modes[0]) and val.modes[1] == data.modes[1]
    both = np.concatenate([fit.points, val.points])
    assert sorted(map(tuple, both)) == sorted(map(tuple, data.points))


def test_text_split_holds_out_the_end_of_the_training_text():
    data = CharText(text="abcdefghij" * 30, seq_len=8, train_fraction=0.9)
    fit, val = validation_split(data, 0.2, seed=0)
    cut = len(data.ids) - round(0.2 * len(data.ids))
    assert np.array_equal(fit.ids, data.ids[:cut]) and np.array_equal(val.ids, data.ids[cut:])
    assert fit.vocab == val.vocab == data.vocab and len(fit) + len(val) <= len(data)
    x, y = val[0]
    assert np.array_equal(x, data.ids[cut:cut + 8]) and np.array_equal(y, data.ids[cut + 1:cut + 9])


@pytest.mark.parametrize("fraction, match", [(0.0, r"\(0, 1\)"), (1.0, r"\(0, 1\)"),
                                             (0.0004, "holds out 0"), (0.9999, "holds out 1000")])
def test_split_errors_name_the_problem(fraction, match):
    with pytest.raises(ValueError, match=match):
        validation_split(Toy2D("moons", n=1000), fraction)


def test_split_errors_for_text_too_short_and_other_datasets():
    with pytest.raises(ValueError, match="seq_len"):
        validation_split(CharText(text="abcdefghij" * 3, seq_len=8), 0.1)
    with pytest.raises(TypeError, match="array data sets and text"):
        validation_split(gm.data.Dataset(), 0.1)


# ---- the record ------------------------------------------------------------------------------
def test_validation_record_patience_and_state():
    v = Validation(patience=2)
    assert v.state_dict() == {"best_nll": None, "best_step": None, "bad_evals": 0}
    assert v.record(10, 5.0) and not v.record(20, float("nan")) and not v.record(30, 5.0)
    assert v.exhausted and v.best_step == 10
    w = Validation(patience=3)
    w.load_state_dict(json.loads(json.dumps(v.state_dict())))
    assert (w.best_nll, w.best_step, w.bad_evals, w.exhausted) == (5.0, 10, 2, False)
    assert w.record(40, 4.0) and w.bad_evals == 0
    assert not Validation(patience=0).exhausted
    fresh = Validation()
    fresh.load_state_dict({"best_nll": None, "best_step": None, "bad_evals": 0})
    assert fresh.best_nll == math.inf


# ---- the loop --------------------------------------------------------------------------------
def test_val_run_scores_the_split_keeps_the_best_step_and_eval_reproduces_it(tmp_path, capsys):
    run = tmp_path / "run"
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(run), *FAST, *SMALL_VAE, "--steps", "40",
                                                "--eval-every", "10", "--val-split", "0.2", "--lr", "3e-3",
                                                "--ema", "0.9"])
    res = train.train(name, tcfg, mcfg, log=QUIET)
    val = _rows(run, "val")
    assert [r["step"] for r in val] == [10, 20, 30, 40]
    assert all("val_bits_per_dim" in r and "test_nll_nats" not in r for r in val)
    best = min(val, key=lambda r: r["val_nll_nats"])
    assert res["selected_step"] == best["step"] and res["val_nll_nats"] == best["val_nll_nats"]
    assert res["step"] == 40 and res["val_examples"] == round(0.2 * len(get_dataset("digits")))
    assert res["stopped_early"] is False
    # one test row, of the selected step's weights; best.safetensors holds that step
    assert [r["step"] for r in _rows(run, "test")] == [best["step"]]
    assert gm.io.load_checkpoint(run / "best")["step"] == best["step"]
    assert gm.io.load_checkpoint(run / "last")["step"] == 40
    # `gmcore eval RUN` reads best.safetensors and gives metrics.json's figure, bit for bit
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--no-sample-quality"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["step"] == best["step"] and again["test_bits_per_dim"] == res["test_bits_per_dim"]
    # the baseline is fitted on the whole training set, as without --val-split
    name, tcfg, mcfg = parse_train_args("vae", ["--out", str(tmp_path / "plain"), *FAST, *SMALL_VAE,
                                                "--steps", "1", "--eval-every", "0"])
    plain = train.train(name, tcfg, mcfg, log=QUIET)
    assert plain["baseline_bits_per_dim"] == res["baseline_bits_per_dim"]


def _maf(tmp_path, out, *flags):
    return parse_train_args("maf", ["--out", str(tmp_path / out), "--dataset", "moons", "--no-progress",
                                    "--num-samples", "0", "--layers", "1", "--hidden", "8", "--ema", "0",
                                    "--val-split", "0.1", "--eval-every", "5", *flags])


def test_patience_stops_training_and_a_resume_says_so(tmp_path):
    # lr 0: the weights never move, so no validation after the first is better
    name, tcfg, mcfg = _maf(tmp_path, "run", "--steps", "100", "--lr", "0", "--patience", "2")
    res = train.train(name, tcfg, mcfg, log=QUIET)
    assert res["step"] == 15 and res["stopped_early"] is True and res["selected_step"] == 5
    assert [r["step"] for r in _rows(tmp_path / "run", "val")] == [5, 10, 15]
    assert gm.io.load_checkpoint(tmp_path / "run" / "last")["step"] == 15
    tcfg.resume = True
    with pytest.raises(ValueError, match="stopped early at step 15.*--patience"):
        train.train(name, tcfg, mcfg, log=QUIET)
    tcfg.patience = 0        # without early stopping the run trains on to --steps
    assert train.train(name, tcfg, mcfg, log=QUIET)["step"] == 100


def test_resume_repeats_the_validations_and_the_selection_exactly(tmp_path, monkeypatch):
    flags = ["--steps", "30", "--log-every", "1", "--ckpt-every", "10", "--lr", "1e-2", "--patience", "4"]
    name, tcfg, mcfg = _maf(tmp_path, "full", *flags)
    full = train.train(name, tcfg, mcfg, log=QUIET)

    from gmcore.models.flows.maf import MAF
    real_loss, calls = MAF.loss, {"n": 0}

    def crash(self, *args):
        calls["n"] += 1
        if calls["n"] == 17:
            raise RuntimeError("power cut")
        return real_loss(self, *args)

    name, tcfg, mcfg = _maf(tmp_path, "part", *flags)
    monkeypatch.setattr(MAF, "loss", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        train.train(name, tcfg, mcfg, log=QUIET)
    monkeypatch.setattr(MAF, "loss", real_loss)
    tcfg.resume = True
    part = train.train(name, tcfg, mcfg, log=QUIET)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec_per_step"} for r in rows]  # noqa: E731
    for split in ("train", "val", "test"):
        assert strip(_rows(tmp_path / "full", split)) == strip(_rows(tmp_path / "part", split))
    assert part["selected_step"] == full["selected_step"] and part["test_nll_nats"] == full["test_nll_nats"]


def test_resume_with_another_split_or_seed_is_refused(tmp_path):
    name, tcfg, mcfg = _maf(tmp_path, "run", "--steps", "5")
    train.train(name, tcfg, mcfg, log=QUIET)
    for change in ({"val_split": 0.2}, {"seed": 1}, {"val_split": 0.0}):
        name, tcfg, mcfg = _maf(tmp_path, "run", "--steps", "10", "--resume")
        for k, v in change.items():
            setattr(tcfg, k, v)
        with pytest.raises(ValueError, match="cannot resume .*--val-split"):
            train.train(name, tcfg, mcfg, log=QUIET)


@pytest.mark.parametrize("kw, match", [({"patience": 3}, "needs --val-split"),
                                       ({"val_split": 0.1, "eval_every": 0}, "needs --eval-every"),
                                       ({"val_split": 1.5}, "fraction in")])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_models_without_a_likelihood_or_steps_refuse_a_split(tmp_path):
    for model, why in (("gan", "no likelihood"), ("ppca", "closed form")):
        name, tcfg, mcfg = parse_train_args(model, ["--out", str(tmp_path / model), *FAST, "--steps", "2",
                                                    "--val-split", "0.1"])
        with pytest.raises(ValueError, match=why):
            train.train(name, tcfg, mcfg, log=QUIET)
        assert not (tmp_path / model / "config.json").exists()   # the folder was given back


def test_a_malformed_validation_record_is_refused_by_name(tmp_path):
    from gmcore.run_checks import check_run_fields
    name, tcfg, mcfg = _maf(tmp_path, "run", "--steps", "5")
    train.train(name, tcfg, mcfg, log=QUIET)
    state = gm.io.load_checkpoint(tmp_path / "run" / "last")
    check_run_fields(state, "last.safetensors")          # as written: accepted
    for bad, field in (({"best_nll": "low", "best_step": 5, "bad_evals": 0}, "validation.best_nll"),
                       ({"best_nll": 1.0, "best_step": -1, "bad_evals": 0}, "validation.best_step"),
                       ({"best_nll": 1.0, "best_step": 5}, "validation.bad_evals")):
        with pytest.raises(gm.io.CheckpointError, match=field):
            check_run_fields({**state, "validation": bad}, "last.safetensors")
