"""A static HTML gallery of every run below a folder: ``gmcore report [FOLDER] -o report.html``.

The index page holds the runs table (:mod:`gmcore.runs`: model, data, steps, the quoted figure
with its kind, digits-FID, training time, state) and, grouped by model family, each run's
samples, loss curve and figures. Each run also gets a page of its own, ``<stem>_runs/<run>.html``
beside the index, with its configs, its final metrics and every picture it wrote. Every page is
self-contained: images are embedded as ``data:`` URIs and the style is inline, so the pages open
from disk, offline, in any browser, and can be mailed or archived as they are.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "report.html"
>>> write_report(tempfile.mkdtemp(), out)["runs"]
0
"""
from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path

from . import io
from .runs import COLUMNS, RunSummary, _cell, _read_rows, find_runs

__all__ = ["write_report"]

PICTURES = ("*.png", "*.gif", "*.jpg", "*.jpeg")
_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
# shown on the index, in this order, when the run wrote them
_HEADLINE = ("samples.png", "density.png", "progress.png", "loss_curve.png")

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.card { display: inline-block; vertical-align: top; margin: 0 1em 1.5em 0; padding: 0.6em;
        border: 1px solid #ddd; border-radius: 6px; max-width: 40em; }
.card img, .pictures img { max-width: 18em; max-height: 18em; margin: 0.2em; image-rendering: pixelated;
                           border: 1px solid #eee; }
.unreadable { color: #a00; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0 1em 1em 0; } figcaption { font-size: 0.8em; color: #555; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path, alt: str) -> str:
    return f'<img src="{_data_uri(path)}" alt="{_e(alt)}" title="{_e(alt)}">'


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path).strip("._") or "run"


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _loss_curve_png(folder: Path) -> bytes | None:
    """A loss curve drawn from metrics.jsonl, for runs that did not write loss_curve.png
    (interrupted or running); None without rows or matplotlib."""
    try:
        rows = _read_rows(folder / "metrics.jsonl")
    except Exception:
        return None
    keys = sorted({k for r in rows if r.get("split") == "train" for k in r
                   if k.startswith("loss") and isinstance(r[k], (int, float))})
    if not rows or not keys:
        return None
    try:
        from .plots import save_loss_curve
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            save_loss_curve(rows, Path(tmp) / "curve.png", keys=tuple(keys[:3]))
            return (Path(tmp) / "curve.png").read_bytes()
    except ImportError:
        return None


def _pictures(folder: Path) -> list[Path]:
    found = {p for pattern in PICTURES for p in folder.glob(pattern) if p.is_file()}
    return sorted(found, key=lambda p: (p.name not in _HEADLINE, _HEADLINE.index(p.name)
                                        if p.name in _HEADLINE else 0, p.name))


def _table(runs: list[RunSummary], links: dict[str, str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h, _ in COLUMNS)
    body = []
    for r in runs:
        cells = []
        for _, attr in COLUMNS:
            text = _e(_cell(r, attr))
            if attr == "path" and r.path in links:
                text = f'<a href="{_e(links[r.path])}">{text}</a>'
            cls = ' class="unreadable"' if attr == "state" and r.error else ""
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(body) + "\n</tbody></table>"


def _card(r: RunSummary, folder: Path, link: str) -> str:
    if r.error:
        return (f'<div class="card"><h3><a href="{_e(link)}">{_e(r.path)}</a></h3>'
                f'<p class="unreadable">unreadable: {_e(r.error)}</p></div>')
    figure = _e(_cell(r, "figure")) + (f" ({_e(r.figure_kind)})" if r.figure_kind else "")
    parts = [f'<div class="card"><h3><a href="{_e(link)}">{_e(r.path)}</a></h3>',
             f"<p>{_e(r.model)} on {_e(r.dataset)}, step {_e(_cell(r, 'steps'))}, {_e(r.state)}<br>"
             f"figure: {figure}; digits-FID: {_e(_cell(r, 'digits_fid'))}; "
             f"training: {_e(_cell(r, 'train_seconds'))}</p>"]
    shown = [p for p in _pictures(folder) if p.name in _HEADLINE]
    parts += [_img(p, f"{r.path}: {p.name}") for p in shown]
    if not (folder / "loss_curve.png").exists():
        png = _loss_curve_png(folder)
        if png is not None:
            parts.append(f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                         f'alt="{_e(r.path)}: loss curve (from metrics.jsonl)">')
    parts.append("</div>")
    return "\n".join(parts)


def _run_page(r: RunSummary, folder: Path, index_name: str) -> str:
    body = [f'<p><a href="../{_e(index_name)}">all runs</a></p>', f"<h1>{_e(r.path)}</h1>",
            _table([r], {})]
    if r.error:
        body.append(f'<p class="unreadable">unreadable: {_e(r.error)}</p>')
    for name in ("config.json", "metrics.json"):
        path = folder / name
        if path.exists():
            try:
                text = json.dumps(json.loads(path.read_text("utf-8")), indent=1)
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                text = f"(unreadable: {exc})"
            body.append(f"<h2>{_e(name)}</h2><pre>{_e(text)}</pre>")
    pictures = _pictures(folder)
    body.append(f"<h2>pictures ({len(pictures)})</h2><div class=\"pictures\">")
    body += [f"<figure>{_img(p, p.name)}<figcaption>{_e(p.name)}</figcaption></figure>" for p in pictures]
    if not (folder / "loss_curve.png").exists() and (png := _loss_curve_png(folder)) is not None:
        body.append(f'<figure><img src="data:image/png;base64,{base64.b64encode(png).decode()}" '
                    'alt="loss curve"><figcaption>loss curve (drawn from metrics.jsonl)</figcaption></figure>')
    body.append("</div>")
    return _page(f"gmcore run {r.path}", "\n".join(body))


def write_report(root, out) -> dict:
    """Write the gallery of the runs below ``root`` to ``out`` (an .html path) and one page per
    run into ``<out stem>_runs/``; returns ``{"index": path, "pages": [...], "runs": count}``.
    Files are written atomically."""
    root, out = Path(root), Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"the report is an HTML file: {out} should end in .html")
    runs = find_runs(root)
    pages_dir = out.with_name(out.stem + "_runs")
    links, taken = {}, set()
    for r in runs:   # one page name per run, even where two paths slug alike ("a/b", "a_b")
        name, k = _slug(r.path), 1
        while name.lower() in taken:
            k += 1
            name = f"{_slug(r.path)}-{k}"
        taken.add(name.lower())
        links[r.path] = f"{pages_dir.name}/{name}.html"
    pages = []
    for r in runs:
        page = out.parent / links[r.path]
        page.parent.mkdir(parents=True, exist_ok=True)
        io.atomic_write_text(page, _run_page(r, Path(r.folder), out.name))
        pages.append(page)
    body = [f"<h1>gmcore runs in {_e(root)}</h1>",
            f"<p>{len(runs)} run(s); written {_e(time.strftime('%Y-%m-%d %H:%M'))} by "
            "<code>gmcore report</code>. The figure is each model's quoted one with its kind "
            "(a GAN has none); digits-FID uses the project's digits classifier, not Inception.</p>",
            _table(runs, links)]
    families: dict[str, list[RunSummary]] = {}
    for r in runs:
        families.setdefault(r.family or "unknown", []).append(r)
    for family in sorted(families):
        body.append(f'<h2 id="{_e(_slug(family))}">{_e(family)}</h2>')
        body += [_card(r, Path(r.folder), links[r.path]) for r in families[family]]
    io.atomic_write_text(out, _page(f"gmcore runs in {root}", "\n".join(body)))
    return {"index": out, "pages": pages, "runs": len(runs)}
