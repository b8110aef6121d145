"""Checks on a run checkpoint's contents before anything is loaded from it.

A checkpoint whose SHA-256 matches can still be wrong for the model at hand: written by other
code, edited on purpose, or holding NaNs from a run that diverged. Loading used to cast a weight
stored as int32 or float16 silently, sample from all-NaN weights, and fail with ``KeyError``
on an RNG state of the wrong form. Here every field the loop reads is checked first, and every
tensor is compared with the model's (or optimizer's, or EMA's) own: same dtype, same shape,
finite. Each error is a :class:`gmcore.io.CheckpointError` naming the file and the field or tensor.
"""
from __future__ import annotations

from numbers import Real

import numpy as np

from .io import CheckpointError
from .tensor import Tensor

__all__ = ["check_run_fields", "check_run_tensors"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _fail(file, field, problem):
    raise CheckpointError(f"{file}: field {field!r} {problem}")


def _need_dict(file, field, v, keys=()):
    if not isinstance(v, dict):
        _fail(file, field, f"must be an object, got {type(v).__name__}")
    for k in keys:
        if k not in v:
            _fail(file, f"{field}.{k}", "is missing")
    return v


def _need_int(file, field, v, low=0):
    if not _is_int(v) or v < low:
        _fail(file, field, f"must be an integer >= {low}, got {v!r}")


def check_run_fields(state, file, known_models=None) -> None:
    """Check the non-tensor fields of a ``gmcore-run`` checkpoint state (the loop's sidecar)."""
    _need_dict(file, "state", state)
    if state.get("kind") != "gmcore-run":
        _fail(file, "kind", f"must be 'gmcore-run' (a training checkpoint), got {state.get('kind')!r}")
    name = state.get("model_name")
    if not isinstance(name, str) or (known_models is not None and name not in known_models):
        _fail(file, "model_name", f"names no known model: {name!r}")
    _need_int(file, "step", state.get("step"))
    for key in ("train_config", "model_config"):
        _need_dict(file, key, state.get(key))
    data = _need_dict(file, "data", state.get("data"), ("name", "shape", "num_levels"))
    if not isinstance(data["name"], str):
        _fail(file, "data.name", f"must be a string, got {data['name']!r}")
    shape = data["shape"]
    if not isinstance(shape, list) or not shape or not all(_is_int(s) and s > 0 for s in shape):
        _fail(file, "data.shape", f"must be a list of positive integers, got {shape!r}")
    _need_int(file, "data.num_levels", data["num_levels"])
    _need_int(file, "data.num_classes", data.get("num_classes", 0))
    _check_rng(file, state.get("rng"))
    loader = _need_dict(file, "loader", state.get("loader"), ("epoch", "batch", "seed"))
    for key in ("epoch", "batch", "seed"):
        _need_int(file, f"loader.{key}", loader[key])
    for key in ("batch_size", "num_examples"):
        if key in loader:
            _need_int(file, f"loader.{key}", loader[key], low=1 if key == "batch_size" else 0)
    for key in ("shuffle", "drop_last"):
        if key in loader and not isinstance(loader[key], bool):
            _fail(file, f"loader.{key}", f"must be true or false, got {loader[key]!r}")
    if "optimizers" not in state and "optimizer" in state:
        # a checkpoint from before models could have several optimizers: its one is "main"
        state["optimizers"] = {"main": state.pop("optimizer")}
        state["schedulers"] = {"main": state.pop("scheduler", None)}
    opts = _need_dict(file, "optimizers", state.get("optimizers"))
    schedulers = _need_dict(file, "schedulers", state.get("schedulers"))
    if not opts or sorted(opts) != sorted(schedulers):
        _fail(file, "optimizers", f"must name one or more optimizers, each with a scheduler; got "
                                  f"{sorted(opts)} and schedulers {sorted(schedulers)}")
    for name, opt in opts.items():
        _need_dict(file, f"schedulers.{name}", schedulers[name])
        opt = _need_dict(file, f"optimizers.{name}", opt, ("state", "param_groups"))
        _need_dict(file, f"optimizers.{name}.state", opt["state"])
        if not isinstance(opt["param_groups"], list) or not all(isinstance(g, dict) for g in opt["param_groups"]):
            _fail(file, f"optimizers.{name}.param_groups", "must be a list of objects")
    if state.get("ema") is not None:
        ema = _need_dict(file, "ema", state["ema"], ("shadow_params",))
        if not isinstance(ema["shadow_params"], list):
            _fail(file, "ema.shadow_params", "must be a list")
    if state.get("base") is not None:   # a second stage's record of its base run
        base = _need_dict(file, "base", state["base"], ("run", "checkpoint_sha256", "model_name",
                                                        "model_config", "data"))
        if not isinstance(base["model_name"], str) or (known_models is not None
                                                       and base["model_name"] not in known_models):
            _fail(file, "base.model_name", f"names no known model: {base['model_name']!r}")
        _need_dict(file, "base.model_config", base["model_config"])
        _need_dict(file, "base.data", base["data"], ("name", "shape", "num_levels"))
    if state.get("validation") is not None:   # --val-split: the best validation so far
        val = _need_dict(file, "validation", state["validation"], ("best_nll", "best_step", "bad_evals"))
        _need_int(file, "validation.bad_evals", val["bad_evals"])
        if val["best_step"] is not None:
            _need_int(file, "validation.best_step", val["best_step"])
            if not isinstance(val["best_nll"], Real) or isinstance(val["best_nll"], bool):
                _fail(file, "validation.best_nll", f"must be a number, got {val['best_nll']!r}")
    acc = state.get("log_acc", {})
    if not isinstance(acc, dict) or not all(isinstance(v, Real) and not isinstance(v, bool)
                                            for v in acc.values()):
        _fail(file, "log_acc", f"must map names to numbers, got {acc!r}")


def _check_rng(file, rng) -> None:
    rng = _need_dict(file, "rng", rng, ("seed", "bit_generator"))
    _need_int(file, "rng.seed", rng["seed"])
    bg = _need_dict(file, "rng.bit_generator", rng["bit_generator"])
    if bg.get("bit_generator") != "PCG64":
        _fail(file, "rng.bit_generator", f"must be a PCG64 state, got {bg.get('bit_generator')!r}")
    try:  # NumPy checks the rest of the form (state, inc, has_uint32, uinteger) on assignment
        np.random.PCG64().state = bg
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        _fail(file, "rng.bit_generator", f"is not a valid PCG64 state ({exc})")


def _check_tensor(file, name, value, like) -> None:
    """``value`` (from the file) against ``like`` (the live tensor it will be copied into)."""
    if not isinstance(value, (Tensor, np.ndarray)):
        raise CheckpointError(f"{file}: {name!r} should be a tensor, got {type(value).__name__}")
    arr = value.data if isinstance(value, Tensor) else value
    ref = like.data if isinstance(like, Tensor) else like
    if arr.dtype != ref.dtype:
        raise CheckpointError(f"{file}: tensor {name!r} is stored as {arr.dtype}, expected "
                              f"{ref.dtype}")
    if tuple(arr.shape) != tuple(ref.shape):
        raise CheckpointError(f"{file}: tensor {name!r} has shape {tuple(arr.shape)}, expected "
                              f"{tuple(ref.shape)}")
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(np.asarray(arr.get() if hasattr(arr, "get") else arr))
        if bad.any():
            raise CheckpointError(f"{file}: tensor {name!r} holds {int(bad.sum())} non-finite value(s) "
                                  f"(NaN or inf) of {arr.size}; refusing to load it")


def check_run_tensors(state, file, model, optimizers=None, ema=None) -> None:
    """Compare the checkpoint's tensors with ``model``'s (and those of ``optimizers``, a dict of
    named optimizers as the checkpoint's ``optimizers``, and ``ema``'s)."""
    saved = state["model"]
    if not isinstance(saved, dict):
        _fail(file, "model", f"must be an object of tensors, got {type(saved).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in saved]
    extra = [k for k in saved if k not in own]
    if missing or extra:
        raise CheckpointError(f"{file}: the model's tensors do not match the checkpoint's"
                              + (f"; missing: {', '.join(missing)}" if missing else "")
                              + (f"; unexpected: {', '.join(extra)}" if extra else ""))
    for k, like in own.items():
        _check_tensor(file, f"model.{k}", saved[k], like)
    for name, optimizer in (optimizers or {}).items():
        params = [p for g in optimizer.param_groups for p in g["params"]]
        where = f"optimizers.{name}.state"
        for idx, entry in state["optimizers"][name]["state"].items():
            if not _is_int(idx) or not 0 <= idx < len(params):
                _fail(file, f"{where}.{idx}", f"refers to no parameter (0..{len(params) - 1})")
            _need_dict(file, f"{where}.{idx}", entry)
            for k, v in entry.items():
                if isinstance(v, (Tensor, np.ndarray)) and k != "step":
                    _check_tensor(file, f"{where}.{idx}.{k}", v, params[idx])
    if ema is not None and state.get("ema") is not None:
        for key, targets in (("shadow_params", ema._params), ("shadow_buffers", ema._buffers)):
            values = state["ema"].get(key, [])
            if not isinstance(values, list) or len(values) != len(targets):
                _fail(file, f"ema.{key}", f"must list {len(targets)} tensors")
            for i, (v, t) in enumerate(zip(values, targets)):
                _check_tensor(file, f"ema.{key}.{i}", v, t)
