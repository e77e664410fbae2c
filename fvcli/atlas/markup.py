"""The web atlas's markup: its one style sheet, and the pieces every page is made of (escaped
text, relative links, sized images, tables of a record's fields). No torch, no framework.
"""

from __future__ import annotations

import html
import math
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fvcli.version import __version__

CSS = """\
/* fv atlas */
:root{color-scheme:dark;--bg:#181818;--panel:#202020;--fg:#dcdcdc;--dim:#8c8c8c;--line:#303030;
--link:#9cc2ff;--dead:#ffaa28;--failed:#eb4646}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header,main,footer{max-width:1480px;margin:0 auto;padding:0 24px}
header{padding-top:18px}
footer{color:var(--dim);font-size:12px;padding-top:24px;padding-bottom:24px}
a{color:var(--link);text-decoration:none}
a:hover{text-decoration:underline}
nav{color:var(--dim);font-size:13px}
nav a{margin-right:2px}
h1{font-size:24px;font-weight:600;margin:6px 0 2px;letter-spacing:.01em}
h2{font-size:16px;font-weight:600;margin:28px 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:13px;font-weight:600;color:var(--dim);margin:18px 0 6px;text-transform:uppercase;letter-spacing:.05em}
p{margin:4px 0}
.dim{color:var(--dim)}
.dead,.flat{color:var(--dead)}
.failed{color:var(--failed)}
.tag{display:inline-block;font-size:11px;padding:0 6px;border:1px solid var(--line);border-radius:8px;color:var(--dim);margin-left:6px}
.pager{display:flex;gap:18px;margin:10px 0 0}
.pager .off{color:var(--dim)}
.grid{display:grid;gap:12px 10px;margin-top:16px}
.grid a{display:block;text-align:center;font-size:12px;color:var(--dim)}
.grid a:hover{color:var(--fg);text-decoration:none}
.grid a.dead,.grid a.flat{color:var(--dead)}
.grid a.failed{color:var(--failed)}
.grid a:hover img{outline:2px solid var(--link)}
.grid img,.grid .x{display:block;margin:0 auto 3px}
/* transparent images (fv render --alpha) show a checkerboard through */
img{background:repeating-conic-gradient(#999 0 25%,#f2f2f2 0 50%) 0 0/16px 16px}
img.px{image-rendering:pixelated}
.x{background:linear-gradient(45deg,transparent 48.5%,var(--failed) 49.5% 50.5%,transparent 51.5%),
linear-gradient(-45deg,transparent 48.5%,var(--failed) 49.5% 50.5%,transparent 51.5%),var(--panel)}
.x.missing{background:var(--panel)}
.figs{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:0}
figcaption{font-size:12px;color:var(--dim);margin-top:4px;max-width:100%}
.strip img{width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 14px 3px 0;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--dim);font-weight:normal;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td img{display:block}
.cols{display:flex;flex-wrap:wrap;gap:8px 48px}
.cols>section{min-width:280px;max-width:100%}
.cols td{overflow-wrap:anywhere}
.strip{margin-bottom:8px;max-width:100%}
.vals{display:grid;gap:2px;font-size:11px;color:var(--dim);text-align:center;font-variant-numeric:tabular-nums}
.imgs{display:flex;gap:4px}
/* activation atlases: a grid of icons, zoomed by radio buttons, a cell's details shown when its link is the target */
.zoom{margin:10px 0}
.zoom input{margin-left:10px}
.aa{display:grid;grid-template-columns:repeat(var(--n),var(--c));grid-auto-rows:var(--c);--c:48px;
background:#ececec;width:max-content;margin-top:8px}
#zoom-half:checked~.aa{--c:24px}
#zoom-double:checked~.aa{--c:96px}
#zoom-quad:checked~.aa{--c:192px}
.aa a{display:block;overflow:hidden}
.aa img{width:var(--c);height:var(--c);display:block;background:none}
.aa a:hover img{outline:2px solid var(--link);outline-offset:-2px}
.cell{display:none;margin-top:18px;padding:12px 16px;background:var(--panel)}
.cell:target{display:block}
"""



def escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def href_to(from_dir: str, target: str) -> str:
    """A relative, percent-encoded and HTML-escaped link from folder `from_dir` to `target` (both
    relative to OUT, with '/')."""
    return escape(quote(posixpath.relpath(target, from_dir or ".")))


def num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.5g}"
    return str(value)


def display(size: int, target: int) -> tuple[int, bool]:
    """(shown side, whether scaled up): smaller images grow by a whole factor, pixelated."""
    if size >= target:
        return target, False
    factor = max(1, target // size)
    return size * factor, factor > 1


def img(src: str, size: int, target: int, alt: str, lazy: bool = True) -> str:
    shown, up = display(size, target)
    return (
        f'<img src="{src}" width="{shown}" height="{shown}" alt="{escape(alt)}"'
        + (' class="px"' if up else "")
        + (' loading="lazy"' if lazy else "")
        + ">"
    )


def html_page(title: str, css: str, crumbs: list[tuple[str | None, str]], body: str, links: str = "") -> str:
    trail = " / ".join(f'<a href="{href}">{escape(text)}</a>' if href else escape(text) for href, text in crumbs)
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n"
        # data: icon: no request for /favicon.ico, which a static server answers with a 404
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{css}">{links}</head>\n'
        f"<body><header><nav>{trail}</nav></header>\n<main>\n{body}</main>\n"
        f'<footer>fv {escape(__version__)} atlas</footer></body></html>\n'
    )


FOOTER = re.compile(rb"<footer>fv [^<>]{1,40} atlas</footer></body></html>\n\Z")  # html_page's last line


def fv_file(path: Path, data: bytes) -> bool:
    """Whether a page or style sheet is one fv atlas wrote: a page ends with html_page's footer, the
    style sheet starts with CSS's first line (fvcli.owned: fv replaces and removes only these)."""
    if path.suffix == ".css":
        return data.startswith(b"/* fv atlas */\n") or data.startswith(b":root{color-scheme:dark;")  # the second: before the mark
    return FOOTER.search(data[-200:]) is not None


def table(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>\n"


def flattened(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested settings mapping as (dotted key, short text) rows; long number lists are summarized."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows.extend(flattened(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows or [(prefix, "—")]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(prefix, "; ".join(inline(v) for v in value))]
    return [(prefix, escape(scalar(value)))]


def inline(item: dict) -> str:
    parts = [str(item["name"])] if "name" in item else []
    parts += [f"{k} {scalar(v)}" for k, v in item.items() if k != "name"]
    return escape(" ".join(parts))


def scalar(value: Any) -> str:
    if isinstance(value, list):
        if len(value) > 6 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return f"{num(min(value))}…{num(max(value))} ({len(value)} values)"
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    return num(value)


def status_text(record: dict) -> str:
    status = str(record.get("status", "?"))
    return status if status == "ok" else f'<span class="{escape(status)}">{escape(status)}</span>'
