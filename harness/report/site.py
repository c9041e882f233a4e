"""The static leaderboard site: one folder (`index.html`, `leaderboard.json`, `runs/<id>/report.html`).

`index.html` carries its data in a `<script type="application/json">` block and its script and style
inline, because browsers refuse `fetch()` of local files: the folder then works from `file://` as well
as from any static host, with no server, CDN or build step. `leaderboard.json` is the same data for
programs. Each run's gallery page (`report.html`, itself self-contained) is copied under `runs/<run id>/`
so that the folder can be moved or published as a whole.
"""
from __future__ import annotations

import html
import json
import shutil
from pathlib import Path
from typing import Sequence

from harness.report.merge import Board, Source
from harness.store import atomic_write_bytes

ASSETS = Path(__file__).with_name("assets")


def _embedded_json(data: object) -> str:
    # `<` escaped as \u003c: no "</script>" or "<!--" inside the block can end it early (still valid JSON)
    return json.dumps(data, sort_keys=True, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")


def copy_galleries(board: Board, sources: Sequence[Source], out: Path) -> None:
    """Copy each run's gallery page into `out/runs/<run id>/` and point the board at it (when it exists)."""
    for source in sources:
        name = source.run.get("gallery")
        page = source.path.parent / name if name else None
        if page is None or not page.is_file():
            continue
        target = out / "runs" / source.run["id"] / "report.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(page, target)
        board.runs[source.run["id"]]["gallery"] = target.relative_to(out).as_posix()


def write_site(board: Board, sources: Sequence[Source], out: str | Path, title: str = "editlab leaderboard") -> Path:
    """Write the site folder `out`; returns the path of its index.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    copy_galleries(board, sources, out)
    data = board.to_json()
    atomic_write_bytes(out / "leaderboard.json", (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    page = (ASSETS / "leaderboard.html").read_text()
    page = (page.replace("{{title}}", html.escape(title))
            .replace("{{style}}", (ASSETS / "leaderboard.css").read_text())
            .replace("{{script}}", (ASSETS / "leaderboard.js").read_text())
            .replace("{{data}}", _embedded_json(data)))
    path = out / "index.html"
    atomic_write_bytes(path, page.encode())
    return path
