"""The per-run HTML page (`<out_dir>/report.html`): leaderboard with intervals, ablation plots,
time-versus-quality scatter and a gallery, in one self-contained file (see `harness.report.html`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from harness.report import html as H
from harness.report.gallery import gallery_row
from harness.report.leaderboard import Leaderboard, interval_table, variant_labels
from harness.report.plots import COST_METRICS, save_figure, time_quality_figure
from harness.store import MethodStore, atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass
class AblationSection:
    title: str
    description: str
    plot_png: bytes
    table: pd.DataFrame


def gallery_columns(dataset: Any, out_dir: Path, columns: Sequence[tuple[str, str, str]], limit: int) -> list[str]:
    """Gallery rows for the first `limit` samples of `dataset`: `columns` are (label, dataset key, method
    key) store folders; a sample a column has no trusted output for shows an empty cell."""
    rows = []
    for sample_id in dataset.sample_ids()[: max(0, limit)]:
        try:
            sample = dataset.load(sample_id)
        except Exception as exc:  # a broken sample is already recorded as failed; the page must still render
            log.warning("gallery: %s left out: %s", sample_id, exc)
            continue
        outputs = []
        for label, dataset_key, method_key in columns:
            store = MethodStore(out_dir, dataset_key, method_key)
            outputs.append((label, store.load_image(sample_id) if store.trusted_record(sample_id) else None))
        rows.append(gallery_row(sample, outputs))
    return rows


def _time_metric(metric_ids: Sequence[str]) -> str | None:
    return next((m for m in ("time", "time_total_s", "time_edit_s") if m in metric_ids), None)


def write_run_page(out_dir: Path, leaderboard: Leaderboard, *, title: str, gallery: Sequence[str],
                   ablations: Sequence[AblationSection] = (), notes: Sequence[str] = ()) -> Path:
    """Write `<out_dir>/report.html` (and the scatter as `plots/time_vs_quality.png|svg`) from what the report
    stage computed (`leaderboard`: its table, bootstrap statistics and smoke-run reasons)."""
    board, stats, metric_ids, reasons = leaderboard.board, leaderboard.stats, leaderboard.metric_ids, leaderboard.reasons

    parts = [f"<h1>{H.esc(title)}</h1>", f'<p class="meta">{H.esc(str(out_dir))}</p>']
    if reasons:
        parts.append('<div class="smoke"><b>SMOKE RUN — these numbers mean nothing.</b> Random-weight networks were used:'
                     "<ul>" + "".join(f"<li>{H.esc(r)}</li>" for r in reasons) + "</ul></div>")
    for section in ablations:
        parts += [f"<h2>{H.esc(section.title)}</h2>", f'<p class="meta">{H.esc(section.description)}</p>',
                  H.img(section.plot_png, section.title, "plot"), H.frame_table(section.table, label_columns=2)]
    parts += ["<h2>Leaderboard</h2>", '<p class="meta">Raw metric values (no table scaling); n = samples scored, '
              "failed = samples whose edit failed.</p>", H.frame_table(board)]
    if len(stats):
        parts += ["<h3>95% bootstrap intervals</h3>", '<p class="meta">mean [low, high]: percentile bootstrap over '
                  "samples, seeded per cell (harness/stats.py).</p>", H.frame_table(interval_table(stats, list(metric_ids)))]
    time_metric = _time_metric(metric_ids)
    quality = [m for m in metric_ids if m not in COST_METRICS]
    if time_metric and quality and len(stats):
        fig = time_quality_figure(stats.assign(method=variant_labels(stats)), time_metric, quality)
        png = save_figure(fig, Path(out_dir) / "plots" / "time_vs_quality")
        parts += ["<h2>Time versus quality</h2>", H.img(png, "time versus quality", "plot")]
    if gallery:
        parts += ["<h2>Gallery</h2>", '<p class="meta">Source with handle (red) and target (blue) points and regions, '
                  "the editable area outlined in white; then each method's output.</p>", *gallery]
    if notes:
        parts.append('<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{H.esc(n)}</li>" for n in notes) + "</ul>")
    path = Path(out_dir) / "report.html"
    atomic_write_bytes(path, H.page(title, "\n".join(parts)).encode())
    return path


def write_standard_page(out_dir: Path, dataset: Any, plans: Sequence[Any], leaderboard: Leaderboard,
                        gallery_size: int) -> Path:
    """The page of a plain run (one dataset, the configured method variants)."""
    keys = pd.DataFrame({"dataset": dataset.key, "method": [p.name for p in plans], "method_key": [p.key for p in plans]})
    columns = [(label, dataset.key, key) for label, key in zip(variant_labels(keys), keys["method_key"])]
    gallery = gallery_columns(dataset, out_dir, columns, gallery_size)
    return write_run_page(out_dir, leaderboard, title=f"editlab run: {dataset.key}", gallery=gallery)
