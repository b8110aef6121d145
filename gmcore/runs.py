"""Every run below a folder, read from the files ``gmcore train`` writes: ``gmcore runs``.

A run folder is one holding any of ``config.json``, ``metrics.jsonl``, ``last.json`` or
``metrics.json`` (see :mod:`gmcore.train` for what each is). :func:`find_runs` walks a folder for
them (not into a run folder: runs do not nest) and summarises each as a :class:`RunSummary`: the
model and its family, the data set, the step reached of the steps asked for, the figure the model
quotes with its kind (exact NLL, bound, dequantization bound, "none" for GANs), digits-FID, the
training time, and the state:

    finished      metrics.json is written (the final evaluation ran)
    running       a live ``gmcore train`` holds the folder's run.lock
    interrupted   a checkpoint but no final evaluation (Ctrl-C, a crash, a failing rank)
    not started   config.json only (stopped before its first checkpoint)

The figure of a run that has not finished is its latest test row's, labelled with its step. A
folder that looks like a run but cannot be read (bad JSON, a file it cannot open) is listed with
the reason in ``error``, never skipped.

>>> import tempfile
>>> find_runs(tempfile.mkdtemp())
[]
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["RunSummary", "find_runs", "summarize", "sort_runs", "format_table", "COLUMNS", "RUN_FILES"]

RUN_FILES = ("config.json", "metrics.jsonl", "last.json", "metrics.json")
# the table's columns, in order: (heading, RunSummary attribute)
COLUMNS = (("run", "path"), ("model", "model"), ("family", "family"), ("data", "dataset"),
           ("steps", "steps"), ("figure", "figure"), ("kind", "figure_kind"),
           ("digits-FID", "digits_fid"), ("train time", "train_seconds"), ("state", "state"))


@dataclass
class RunSummary:
    """One run folder, as :func:`summarize` read it (``None``: the folder does not say)."""
    path: str                           # relative to the folder searched
    folder: str = ""                    # the run folder itself
    model: str | None = None
    family: str | None = None
    dataset: str | None = None
    step: int | None = None
    steps: int | None = None            # the steps asked for (``--steps``)
    figure: float | None = None         # the quoted figure, in ``figure_unit``
    figure_unit: str | None = None      # "bits/dim", "bits/char", "nats", ... (None: no figure)
    figure_kind: str | None = None      # its nll_kind: "exact", "variational bound", "none", ...
    figure_step: int | None = None      # the step it was measured at
    digits_fid: float | None = None
    train_seconds: float | None = None  # the optimizer steps' time (metrics.jsonl's sec_per_step)
    state: str = "unknown"
    error: str | None = None            # why the folder could not be read
    metrics: dict = field(default_factory=dict, repr=False)   # metrics.json as written

    def to_dict(self) -> dict:
        return asdict(self)


def is_run_folder(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def find_runs(root) -> list[RunSummary]:
    """Summaries of every run folder below ``root`` (``root`` itself included), in path order.

    Raises ``FileNotFoundError`` when ``root`` is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        folder = Path(dirpath)
        if is_run_folder(folder):
            found.append(summarize(folder, root))
            dirnames[:] = []   # runs do not nest
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    return sorted(found, key=lambda r: r.path)


def _read_json(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        value = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"cannot read {path.name}: {exc}") from exc
    except ValueError as exc:
        raise _Unreadable(f"{path.name} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise _Unreadable(f"{path.name} holds a {type(value).__name__}, not a JSON object")
    return value


def _read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Unreadable(f"cannot read {path.name}: {exc}") from exc
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            if i == len(lines) - 1:   # a row cut short by a crash mid-write: the rest is good
                break
            raise _Unreadable(f"{path.name} line {i + 1} is not valid JSON ({exc})") from exc
    return rows


class _Unreadable(Exception):
    pass


def summarize(folder, root=None) -> RunSummary:
    """The :class:`RunSummary` of one run folder (``path`` relative to ``root`` when given)."""
    folder = Path(folder)
    rel = folder.relative_to(root) if root is not None else folder
    summary = RunSummary(path=str(rel) if str(rel) != "." else folder.name or str(folder), folder=str(folder))
    try:
        _fill(summary, folder)
    except _Unreadable as exc:
        summary.state, summary.error = "unreadable", str(exc)
    return summary


def _fill(s: RunSummary, folder: Path) -> None:
    config = _read_json(folder / "config.json") or {}
    final = _read_json(folder / "metrics.json")
    header = _read_json(folder / "last.json")
    rows = _read_rows(folder / "metrics.jsonl")
    state = (header or {}).get("state")   # the checkpoint header's training state
    state = state if isinstance(state, dict) else {}
    s.model = config.get("model") or state.get("model_name") or (final or {}).get("model")
    s.family = _family(s.model)
    s.dataset = config.get("data") or (final or {}).get("dataset")
    train = config.get("train") or state.get("train_config") or {}
    s.steps = train.get("steps") if isinstance(train, dict) else None
    steps_seen = [r.get("step", 0) for r in rows if isinstance(r.get("step"), int)]
    s.step = (final or {}).get("step", state.get("step", max(steps_seen, default=None)))
    s.train_seconds = _train_seconds(rows)
    if final is not None:
        s.metrics = final
        _figure(s, final, s.step)
        s.state = "finished"
    else:
        tests = [r for r in rows if r.get("split") == "test"]
        if tests:
            _figure(s, tests[-1], tests[-1].get("step"))
        s.state = "running" if _locked(folder) else ("interrupted" if header is not None else "not started")
    if s.model is None:
        raise _Unreadable("no model named in config.json, last.json or metrics.json")


def _figure(s: RunSummary, res: dict, step) -> None:
    s.figure_kind = res.get("nll_kind")
    unit = res.get("unit")
    if unit == "nats":
        s.figure, s.figure_unit = res.get("test_nll_nats"), "nats"
    elif unit not in (None, "none"):
        s.figure, s.figure_unit = res.get("test_bits"), f"bits/{unit}"
    fid = res.get("digits_fid")
    s.digits_fid = fid if isinstance(fid, (int, float)) else s.digits_fid
    s.figure_step = step


def _train_seconds(rows: list[dict]) -> float | None:
    """Sum over the train rows of sec_per_step times the steps the row covers (rows before a
    resume that were redone are dropped by the trainer, so none is counted twice)."""
    total, last, seen = 0.0, 0, False
    for r in rows:
        if r.get("split") != "train" or not isinstance(r.get("sec_per_step"), (int, float)):
            continue
        step = int(r.get("step", last))
        total += r["sec_per_step"] * max(step - last, 0)
        last, seen = step, True
    return total if seen else None


def _family(model: str | None) -> str | None:
    if not model:
        return None
    from .models import registry
    try:
        return registry.get(model).family
    except (KeyError, ValueError):
        return None


def _locked(folder: Path) -> bool:
    from .runlock import is_locked
    return is_locked(folder)


def sort_runs(runs: list[RunSummary], column: str, descending: bool = False) -> list[RunSummary]:
    """``runs`` ordered by the table column ``column`` (its heading or attribute name); runs
    without a value go last either way."""
    def norm(name):   # "train time", "train-time" and "train_time" are one column
        return name.lower().replace("-", " ").replace("_", " ")

    by_name = {norm(h): a for h, a in COLUMNS} | {norm(a): a for _, a in COLUMNS}
    attr = by_name.get(norm(column))
    if attr is None:
        names = ", ".join(h for h, _ in COLUMNS)
        raise ValueError(f"cannot sort by {column!r}: the columns are {names}")
    have = [r for r in runs if getattr(r, attr) is not None]
    missing = [r for r in runs if getattr(r, attr) is None]
    return sorted(have, key=lambda r: getattr(r, attr), reverse=descending) + missing


def _cell(r: RunSummary, attr: str) -> str:
    value = getattr(r, attr)
    if attr == "figure":
        if value is None:
            return "none" if r.figure_kind == "none" else "-"
        at = "" if r.state == "finished" or r.figure_step is None else f" (step {r.figure_step})"
        return f"{value:.4g} {r.figure_unit}{at}"
    if attr == "steps":
        return "-" if r.step is None else (str(r.step) if r.steps in (None, r.step) else f"{r.step}/{r.steps}")
    if attr == "train_seconds":
        return "-" if value is None else _duration(value)
    if attr == "digits_fid":
        return "-" if value is None else f"{value:.2f}"
    if attr == "state" and r.error:
        return f"unreadable: {r.error}"
    return "-" if value is None else str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{seconds:.1f}s")


def format_table(runs: list[RunSummary]) -> str:
    """A markdown table of ``runs``, one row each, in the order given."""
    head = [h for h, _ in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        lines.append("| " + " | ".join(_cell(r, a).replace("|", "/") for _, a in COLUMNS) + " |")
    return "\n".join(lines)
