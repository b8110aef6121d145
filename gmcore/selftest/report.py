"""Rows of ``gmcore selftest``, the printed table, selftest.json / selftest.md and machine info."""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One line of the report. ``kind``: "kernel", "model" or "bench"; ``status``: pass/FAIL/skip."""

    kind: str
    family: str
    op: str
    impl: str
    device: str
    check: str
    max_err: float = 0.0
    tol: float | None = None  # absolute tolerance at the worst element (kernel rows)
    ratio: float = 0.0  # worst error / allowed error (<= 1 passes)
    status: str = "pass"
    detail: str = ""
    timings: dict = field(default_factory=dict)  # bench rows: name -> ms

    def absorb(self, err: float, atol: float, ratio: float, problem: str | None) -> None:
        """Fold one compared array into the row (keeps the worst; the first problem fails it)."""
        if ratio >= self.ratio:
            self.ratio, self.max_err, self.tol = ratio, err, atol
        if problem and self.status != "FAIL":
            self.status, self.detail = "FAIL", problem

    @property
    def name(self) -> str:
        return f"{self.family}/{self.op}/{self.impl}/{self.device}/{self.check}"


def _num(x) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.2e}" if x else "0"


def _cells(r: Row) -> list[str]:
    if r.kind == "bench":
        t = " ".join(f"{k}={v:.3f}ms" if isinstance(v, float) else f"{k}={v}" for k, v in r.timings.items())
        return [r.family, r.op, r.impl, r.device, r.check, t, "", r.status, r.detail]
    if r.kind == "model":
        return [r.family, r.op, r.impl, r.device, r.check, "", "", r.status, r.detail]
    return [r.family, r.op, r.impl, r.device, r.check, _num(r.max_err), _num(r.tol), r.status, r.detail]


HEADER = ["family", "op", "implementation", "device", "check", "max error", "tolerance", "result", "detail"]
BENCH_HEADER = ["family", "op", "implementation", "device", "case", "median ms", "", "result", "detail"]


def format_table(rows: list[Row]) -> str:
    """Check rows, then bench rows under their own header."""
    checks = [r for r in rows if r.kind != "bench"]
    bench = [r for r in rows if r.kind == "bench"]
    parts = [_table(HEADER, checks)] if checks else []
    if bench:
        parts.append(_table(BENCH_HEADER, bench))
    return "\n\n".join(parts)


def _table(header: list[str], rows: list[Row]) -> str:
    data = [header] + [_cells(r) for r in rows]
    widths = [max(len(d[i]) for d in data) for i in range(len(header) - 1)]
    lines = []
    for k, d in enumerate(data):
        lines.append("  ".join(c.ljust(w) for c, w in zip(d, widths)) + "  " + d[-1])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(line.rstrip() for line in lines)


def format_markdown(rows: list[Row], info: dict, summary: dict) -> str:
    out = ["# gmcore selftest", ""]
    out += [f"- **{k}**: {v}" for k, v in info.items()]
    out += ["", f"**{summary['result']}**: {summary['passed']} passed, {summary['failed']} failed, "
            f"{summary['skipped']} skipped", ""]
    if summary["failures"]:
        out += ["Failing rows:", ""] + [f"- `{n}`" for n in summary["failures"]] + [""]
    out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |")
    return "\n".join(out) + "\n"


def summarize(rows: list[Row]) -> dict:
    failed = [r.name for r in rows if r.status == "FAIL"]
    return {"result": "FAIL" if failed else "PASS", "passed": sum(r.status == "pass" for r in rows),
            "failed": len(failed), "skipped": sum(r.status == "skip" for r in rows), "failures": failed}


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    return x


def write(out_dir, rows: list[Row], info: dict, summary: dict) -> tuple[Path, Path]:
    """Write selftest.json and selftest.md into ``out_dir`` (created), atomically."""
    from gmcore.io import atomic_write_text

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"gmcore selftest: --out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "summary": summary, "rows": [_json_safe(asdict(r)) for r in rows]}
    jpath, mpath = out / "selftest.json", out / "selftest.md"
    atomic_write_text(jpath, json.dumps(doc, indent=1) + "\n")
    atomic_write_text(mpath, format_markdown(rows, info, summary))
    return jpath, mpath


def machine_info(device: str) -> dict:
    """Versions of gmcore and its optional parts, and the device name."""
    import numpy as np

    from gmcore import cli

    info = {"gmcore": cli._gmcore_version(), "python": platform.python_version(), "numpy": np.__version__}
    for mod, dist in (("cupy", ("cupy-cuda13x", "cupy-cuda12x", "cupy")), ("triton", ("triton",)),
                      ("numba", ("numba",)), ("torch", ("torch",))):
        info[mod] = cli._probe_module(mod, *dist)
    info["_C"] = cli._probe_C()
    if device == "cuda":
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.runtime.getDevice())
        name = props["name"]
        info["device"] = name.decode() if isinstance(name, bytes) else str(name)
    else:
        info["device"] = f"cpu: {platform.processor() or platform.machine()}"
    return info
