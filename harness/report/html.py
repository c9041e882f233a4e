"""Self-contained HTML: inline CSS, images as base64 PNG data URIs, no scripts and no external requests,
so a page opens offline and can be mailed or archived as one file."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable, Sequence

import numpy as np

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 24px auto; max-width: 1400px;
       padding: 0 16px; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.25em; margin-top: 1.6em;
  border-bottom: 1px solid #ddd; padding-bottom: 4px; } h3 { font-size: 1.05em; }
p.meta { color: #555; font-size: 0.9em; }
.smoke { background: #fff3cd; border: 1px solid #e0b400; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.9em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f2f4f7; } td.label, th.label { text-align: left; }
td.best { font-weight: 700; } td.paper { background: #f8f8fb; color: #444; }
span.ci { display: block; color: #777; font-size: 0.8em; } .missing { color: #aaa; }
figure { display: inline-block; margin: 6px; text-align: center; vertical-align: top; }
figcaption { font-size: 0.8em; color: #444; max-width: 260px; overflow-wrap: anywhere; }
img.plot { max-width: 100%; border: 1px solid #eee; }
.gallery-row { display: flex; flex-wrap: wrap; align-items: flex-start; border-bottom: 1px solid #eee; padding: 6px 0; }
ul.notes li { margin: 3px 0; }
"""

MISSING = '<span class="missing">—</span>'


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumbnail_png(image: np.ndarray, max_side: int = 256) -> bytes:
    """A PNG of `image` (uint8 H×W×3) scaled down so that its longer side is at most `max_side`."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
    buffer = io.BytesIO()
    im.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def img(data: bytes, alt: str, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{esc(alt)}" src="{png_data_uri(data)}">'


def figure(data: bytes, caption: str, css_class: str = "") -> str:
    return f"<figure>{img(data, caption, css_class)}<figcaption>{esc(caption)}</figcaption></figure>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], label_columns: int = 1) -> str:
    """A table from already-escaped cell HTML; the first `label_columns` columns are left-aligned."""
    head = "".join(f'<th class="label">{h}</th>' if i < label_columns else f"<th>{h}</th>" for i, h in enumerate(header))
    body = []
    for row in rows:
        tds = "".join(c if c.startswith("<td") else (f'<td class="label">{c}</td>' if i < label_columns else f"<td>{c}</td>")
                      for i, c in enumerate(row))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def frame_table(df: Any, floatfmt: str = ".4f", label_columns: int = 2) -> str:
    """A pandas DataFrame as an HTML table (floats formatted, everything escaped)."""
    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return MISSING if np.isnan(v) else format(float(v), floatfmt)
        return esc(v)

    return table([esc(c) for c in df.columns], ([fmt(v) for v in row] for row in df.itertuples(index=False)), label_columns)


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="icon" href="data:,"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")
