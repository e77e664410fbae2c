"""`fv atlas OUT`: a static web atlas of everything rendered under OUT. No torch, no framework.

The atlas is built from what is on disk: every job folder (found by its `grid.json` sidecar), its
unit PNGs, and its dataset examples (`examples/examples.json`, written by `fv examples`). It writes

    OUT/index.html                    models -> layers, with unit counts and a thumbnail each
    OUT/atlas.css                     the one style sheet
    JOB/index.html                    a layer page: every unit as a lazy-loaded thumbnail
    JOB/units/LABEL.html              a unit page: its images, other renders of the same channel,
                                      dataset examples, its record and the job's settings

What is on disk is found by fvcli.atlas.discovery; this module draws the pages.

Links are relative, so the atlas works from file:// and from any static server. Every page is made
in memory and written (atomically) only when its bytes differ, so rebuilding after a few more units
rewrites only the pages that changed. Pages hold nothing that changes between identical builds: no
build time, and no timing from the sidecar.
"""

from __future__ import annotations

import html
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from fvcli.version import __version__
from fvcli.errors import FvError
from fvcli.messages import plural
from fvcli.files import atomic_write
from fvcli.atlas.discovery import ACTIVATION_PAGE, Job, Unit, discover, group_jobs, name_pages

THUMB = 128  # px: thumbnails on layer pages (smaller images are scaled up by a whole factor)
LARGE = 256  # px: images on unit pages
INDEX_THUMB = 64
CROP = 96  # px: dataset example crops are shown at least about this large

CSS = """\
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


@dataclass
class Result:
    written: list[Path]
    unchanged: int
    removed: list[Path]
    jobs: int



# ---- HTML ----


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(from_dir: str, target: str) -> str:
    """A relative, percent-encoded and HTML-escaped link from folder `from_dir` to `target` (both
    relative to OUT, with '/')."""
    return _e(quote(posixpath.relpath(target, from_dir or ".")))


def _num(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.5g}"
    return str(value)


def _display(size: int, target: int) -> tuple[int, bool]:
    """(shown side, whether scaled up): smaller images grow by a whole factor, pixelated."""
    if size >= target:
        return target, False
    factor = max(1, target // size)
    return size * factor, factor > 1


def _img(src: str, size: int, target: int, alt: str, lazy: bool = True) -> str:
    shown, up = _display(size, target)
    return (
        f'<img src="{src}" width="{shown}" height="{shown}" alt="{_e(alt)}"'
        + (' class="px"' if up else "")
        + (' loading="lazy"' if lazy else "")
        + ">"
    )


def _page(title: str, css: str, crumbs: list[tuple[str | None, str]], body: str, links: str = "") -> str:
    trail = " / ".join(f'<a href="{href}">{_e(text)}</a>' if href else _e(text) for href, text in crumbs)
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n"
        # data: icon: no request for /favicon.ico, which a static server answers with a 404
        f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{css}">{links}</head>\n'
        f"<body><header><nav>{trail}</nav></header>\n<main>\n{body}</main>\n"
        f'<footer>fv {_e(__version__)} atlas</footer></body></html>\n'
    )


def _table(rows: list[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already."""
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>\n"


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested settings mapping as (dotted key, short text) rows; long number lists are summarized."""
    if isinstance(value, dict):
        rows = []
        for key, item in value.items():
            rows.extend(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return rows or [(prefix, "—")]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [(prefix, "; ".join(_inline(v) for v in value))]
    return [(prefix, _e(_scalar(value)))]


def _inline(item: dict) -> str:
    parts = [str(item["name"])] if "name" in item else []
    parts += [f"{k} {_scalar(v)}" for k, v in item.items() if k != "name"]
    return _e(" ".join(parts))


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        if len(value) > 6 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return f"{_num(min(value))}…{_num(max(value))} ({len(value)} values)"
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return _num(value)


def _status(record: dict) -> str:
    status = str(record.get("status", "?"))
    return status if status == "ok" else f'<span class="{_e(status)}">{_e(status)}</span>'


def _thumb_cell(job: Job, unit: Unit) -> str:
    record = unit.record
    status = str(record.get("status"))
    label = _e(record["label"]) + ("" if status == "ok" else f" {_e(status)}")
    cls = "" if status == "ok" else f' class="{_e(status)}"'
    if unit.images:
        picture = _img(_href(job.rel, f"{job.rel}/{unit.images[0]['image']}"), job.size, THUMB, record["label"])
    else:
        shown, _ = _display(job.size, THUMB)
        kind = "x" if status == "failed" else "x missing"
        picture = f'<div class="{kind}" style="width:{shown}px;height:{shown}px"></div>'
    return f'<a{cls} href="units/{_e(quote(unit.page))}">{picture}{label}</a>\n'


def index_page(models: dict[tuple[str, str], dict[str, list[Job]]]) -> str:
    jobs = [job for layers in models.values() for group in layers.values() for job in group]
    units = sum(len(job.units) for job in jobs)
    body = [f"<h1>Feature visualization atlas</h1>\n<p class=\"dim\">{plural(len(models), 'model')}, {plural(len(jobs), 'job')}, {plural(units, 'unit')}</p>\n"]
    for (name, weights), layers in models.items():
        architecture = next(iter(layers.values()))[0].sidecar["model"].get("architecture")
        body.append(f'<h2>{_e(name)} <span class="dim">· weights {_e(weights)}</span></h2>\n')
        if architecture and architecture != name:
            body.append(f'<p class="dim">{_e(architecture)}</p>\n')
        body.append(
            '<table><tr><th></th><th>layer</th><th>job</th><th class="n">units</th><th class="n">dead</th>'
            '<th class="n">flat</th><th class="n">failed</th><th>images</th><th></th></tr>\n'
        )
        for group in layers.values():
            for job in group:
                first = next((u for u in job.units if u.images and u.record.get("status") == "ok"), None)
                first = first or next(u for u in job.units if u.images)
                thumb = _img(_href("", f"{job.rel}/{first.images[0]['image']}"), job.size, INDEX_THUMB, first.record["label"])
                link = _href("", f"{job.rel}/index.html")
                settings = job.sidecar["settings"]
                dead, flat, failed = job.count("dead"), job.count("flat"), job.count("failed")
                body.append(
                    f'<tr><td><a href="{link}">{thumb}</a></td><td><a href="{link}">{_e(job.layer)}</a></td>'
                    f"<td>{_e(job.rel)}{''.join(f'<span class=tag>{_e(t)}</span>' for t in job.tags)}</td>"
                    f'<td class="n">{len(job.units)}</td>'
                    f'<td class="n{" dead" if dead else ""}">{dead}</td><td class="n{" flat" if flat else ""}">{flat}</td>'
                    f'<td class="n{" failed" if failed else ""}">{failed}</td>'
                    f'<td class="dim">{_e(settings.get("size"))} px, {_e(settings.get("steps"))} steps</td>'
                    f"<td>{'examples' if _examples_of(job) else ''}"
                    + (f' <a href="{_href("", f"{job.rel}/{ACTIVATION_PAGE}")}">activation atlas</a>' if job.activation_atlas else "")
                    + "</td></tr>\n"
                )
        body.append("</table>\n")
    return _page("fv atlas", "atlas.css", [(None, "Atlas")], "".join(body))


def _examples_of(job: Job) -> Job | None:
    """The job whose examples serve this job: its own, else another job of the same layer."""
    if job.examples is not None:
        return job
    return next((other for other in job.group if other.examples is not None), None)


def _crumbs(job: Job, depth: int, unit: Unit | None = None) -> list[tuple[str | None, str]]:
    up = "../" * depth
    crumbs: list[tuple[str | None, str]] = [(f"{up}index.html", "Atlas"), (None, job.model_key[0])]
    if unit is None:
        return [*crumbs, (None, job.title)]
    return [*crumbs, ("../index.html", job.title), (None, unit.record["label"])]


def layer_page(job: Job) -> str:
    depth = job.rel.count("/") + 1
    sidecar, settings = job.sidecar, job.sidecar["settings"]
    dead, flat, failed = job.count("dead"), job.count("flat"), job.count("failed")
    counts = plural(len(job.units), "unit")
    counts += f', <span class="dead">{dead} dead</span>' if dead else ""
    counts += f', <span class="flat">{flat} flat</span>' if flat else ""
    counts += f', <span class="failed">{failed} failed</span>' if failed else ""
    tags = "".join(f'<span class="tag">{_e(t)}</span>' for t in job.tags)
    body = [f"<h1>{_e(job.layer)}{tags}</h1>\n"]
    body.append(f'<p>{_e(sidecar["model"].get("name"))} · weights {_e(sidecar["model"].get("weights"))} · {counts}</p>\n')
    body.append(f'<p class="dim">{_e(sidecar.get("objective", ""))}</p>\n')
    body.append(
        f'<p class="dim">{_e(settings.get("size"))} px, {_e(settings.get("steps"))} steps · '
        f'<a href="grid.png">grid.png</a> · <a href="grid.json">grid.json</a></p>\n'
    )
    if job.activation_atlas is not None:
        body.append(f'<p>These are the icons of an activation atlas: <a href="{ACTIVATION_PAGE}">the atlas</a>, one icon a cell</p>\n')
    others = [other for other in job.group if other is not job]
    if others:
        links = ", ".join(f'<a href="{_href(job.rel, f"{o.rel}/index.html")}">{_e(o.rel)}</a>' for o in others)
        body.append(f'<p class="dim">Also of this layer: {links}</p>\n')
    column = max(_display(job.size, THUMB)[0] + 8, 56)  # room for the label of a small image
    body.append(
        f'<div class="grid" style="grid-template-columns:repeat(auto-fill,{column}px)">\n'
        + "".join(_thumb_cell(job, unit) for unit in job.units)
        + "</div>\n"
    )
    origin = sidecar.get("job", {}).get("origin")
    meta = [("job folder", _e(job.rel)), ("made by", _e(origin)), ("fv", _e(sidecar.get("fv_version")))]
    meta += _model_rows(sidecar)
    body.append('<div class="cols"><section><h2>Job</h2>\n' + _table(meta))
    body.append("</section><section><h2>Settings</h2>\n" + _table(_flat(settings)) + "</section></div>\n")
    return _page(f"{job.layer} · {job.model_key[0]} · fv atlas", _href(job.rel, "atlas.css"), _crumbs(job, depth), "".join(body))


def _model_rows(sidecar: dict) -> list[tuple[str, str]]:
    model = sidecar["model"]
    layout = sidecar.get("layer_layout") or {}
    rows = [
        ("model", _e(model.get("name"))),
        ("architecture", _e(model.get("architecture"))),
        ("weights", _e(model.get("weights"))),
    ]
    if model.get("weights_sha256"):
        rows.append(("weights sha256", f"<code>{_e(model['weights_sha256'])}</code>"))
    rows += [
        ("layer", _e(sidecar.get("layer"))),
        ("module", _e(sidecar.get("layer_module"))),
        ("output shape", _e(_scalar(sidecar.get("layer_shape")))),
        ("layout", _e(" ".join(f"{k} {_scalar(v)}" for k, v in layout.items()))),
    ]
    if sidecar.get("model_input_size"):
        rows.append(("model input size", _e(sidecar["model_input_size"])))
    for item in sidecar.get("files") or []:  # the photos and direction files the objectives were made from
        if isinstance(item, dict):
            rows.append(("file", f"{_e(item.get('path'))} <code>{_e(item.get('sha256'))}</code>"))
    return rows


def _unit_figures(job: Job, unit: Unit, where: str) -> str:
    """The unit's images, large, each with its objective and activation values."""
    figures = []
    for entry in unit.images:
        src = _href(where, f"{job.rel}/{entry['image']}")
        values = f"{_num(entry.get('activation_start'))} → {_num(entry.get('activation_final'))}"
        figures.append(
            f"<figure>{_img(src, job.size, LARGE, entry.get('objective') or unit.record['label'], lazy=False)}"
            f"<figcaption>{_e(entry.get('objective'))} · {values}</figcaption></figure>"
        )
    if not unit.images:
        shown, _ = _display(job.size, LARGE)
        kind = "x" if unit.record.get("status") == "failed" else "x missing"
        reason = unit.record.get("error") or ("failed" if unit.record.get("status") == "failed" else "image missing")
        figures.append(f'<figure><div class="{kind}" style="width:{shown}px;height:{shown}px"></div><figcaption>{_e(reason)}</figcaption></figure>')
    extras = [  # the files an option wrote beside the images: step images, alpha maps, upscaled images
        f'<figure><a href="{_href(where, f"{job.rel}/{name}")}">{_img(_href(where, f"{job.rel}/{name}"), job.size, THUMB, caption)}</a>'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
        for caption, name in unit.extras
    ]
    more = '<div class="figs">' + "".join(extras) + "</div>\n" if extras else ""
    return '<div class="figs">' + "".join(figures) + "</div>\n" + more


def _siblings(job: Job, unit: Unit, where: str) -> str:
    """Other renders of the same channel in other jobs of this layer: negative, diverse, ..."""
    channel = unit.record.get("channel")
    if channel is None:
        return ""
    figures = []
    for other in job.group:
        if other is job:
            continue
        match = other.by_channel.get(channel)
        if match is None:
            continue
        link = _href(where, f"{other.rel}/units/{match.page}")
        pictures = "".join(_img(_href(where, f"{other.rel}/{e['image']}"), other.size, THUMB, e.get("objective") or "") for e in match.images)
        pictures = f'<span class="imgs">{pictures}</span>' if pictures else _status(match.record)
        what = ", ".join(other.tags) or other.rel
        figures.append(
            f'<figure><a href="{link}">{pictures}</a><figcaption><a href="{link}">{_e(match.record.get("objective"))}</a>'
            f" · {_e(what)}</figcaption></figure>"
        )
    if not figures:
        return ""
    return "<h2>Other renders of this channel</h2>\n" + '<div class="figs">' + "".join(figures) + "</div>\n"


def _dataset_examples(job: Job, unit: Unit, where: str) -> str:
    """The strips of the images that excite the channel most and least, each crop's value under it."""
    source = _examples_of(job)
    channel = unit.record.get("channel")
    if source is None or channel is None:
        return ""
    data, entry = source.examples, source.examples_by_channel.get(channel)
    if entry is None:
        return ""
    images = data.get("images") or {}
    about = f"{_e(images['seen'])} images" if images.get("seen") is not None else ""
    if images.get("folder"):
        about += f" of {_e(Path(str(images['folder'])).name)}/"
    parts = [f'<h2>Dataset examples <span class="dim">{about}</span></h2>\n<div class="cols">']
    for key, strip, title in (("top", "strip", "Most activating"), ("bottom", "negative_strip", "Most suppressing")):
        crops = [c for c in entry.get(key) or [] if isinstance(c, dict)]
        path = source.folder / "examples" / str(entry.get(strip)) if entry.get(strip) else None
        if not crops and path is None:
            continue
        # After a ReLU the bottom crops all sit at 0: they are ranked by their mean, so show that.
        tied = len(crops) > 1 and len({c.get("value") for c in crops}) == 1 and all("mean" in c for c in crops)
        shown = "mean" if tied else "value"
        note = f' <span class="dim">all at {_num(crops[0].get("value"))}; means below</span>' if tied else ""
        parts.append(f"<section><h3>{title}{note}</h3>\n")
        if path is not None and path.is_file():
            width, height = _png_size(path)
            factor = max(1, CROP // height) if height else 1  # small crops grow, so their values fit under them
            width, height = width * factor, height * factor
            src = _href(where, f"{source.rel}/examples/{entry[strip]}")
            parts.append(
                f'<div class="strip" style="width:{width}px"><img src="{src}" width="{width}" height="{height}" '
                f'alt="{_e(title)} crops"{" class=px" if factor > 1 else ""} loading="lazy">'
            )
        else:
            parts.append('<div class="strip">')
        # one cell per crop, the strip's width shared alike, so that each value stands under its crop
        cells = "".join(
            f'<span title="{_e(c.get("path"))}">{_num(c.get(shown))}</span>' for c in crops
        )
        parts.append(f'<div class="vals" style="grid-template-columns:repeat({max(1, len(crops))},1fr)">{cells}</div></div></section>\n')
    return "".join(parts) + "</div>\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (0, 0 when it is not one)."""
    with open(path, "rb") as file:
        head = file.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def unit_page(job: Job, index: int) -> str:
    unit, record = job.units[index], job.units[index].record
    where = f"{job.rel}/units"
    prev = job.units[index - 1] if index > 0 else None
    nxt = job.units[index + 1] if index + 1 < len(job.units) else None
    links = "".join(f'<link rel="{rel}" href="{_e(quote(u.page))}">' for rel, u in (("prev", prev), ("next", nxt)) if u)

    def pager_link(u: Unit | None, text: str, rel: str) -> str:
        if u is None:
            return f'<span class="off">{text}</span>'
        return f'<a rel="{rel}" href="{_e(quote(u.page))}">{text} {_e(u.record["label"])}</a>'

    body = [f"<h1>{_e(record.get('objective') or record['label'])} {'' if record.get('status') == 'ok' else _status(record)}</h1>\n"]
    body.append(
        f'<div class="pager">{pager_link(prev, "← previous", "prev")}<a href="../index.html">↑ {_e(job.title)}</a>'
        f'{pager_link(nxt, "next →", "next")}</div>\n'
    )
    siblings = _siblings(job, unit, where)
    body.append('<div class="cols"><section><h2>Visualization</h2>\n' + _unit_figures(job, unit, where) + "</section>")
    body.append((f"<section>{siblings}</section>" if siblings else "") + "</div>\n")
    body.append(_dataset_examples(job, unit, where))
    rows = [(k, _e(_scalar(record.get(k)))) for k in ("label", "channel", "direction", "objective") if k in record]
    rows.append(("status", _status(record)))
    if record.get("reason"):
        rows.append(("why", _e(record["reason"])))
    if record.get("error"):
        rows.append(("error", _e(record["error"])))
    rows += [
        ("activation start", _num(record.get("activation_start"))),
        ("activation final", _num(record.get("activation_final"))),
        ("seed", _e(record.get("seed"))),
    ]
    if "diversity_similarity" in record:
        rows.append(("diversity similarity", _num(record["diversity_similarity"])))
    body.append('<div class="cols"><section><h2>Unit</h2>\n' + _table(rows))
    if len(record.get("images") or []) > 1:
        body.append(
            '<table><tr><th>image</th><th>objective</th><th class="n">activation start</th><th class="n">final</th></tr>'
            + "".join(
                f"<tr><td>{_e(e.get('image'))}</td><td>{_e(e.get('objective'))}</td>"
                f'<td class="n">{_num(e.get("activation_start"))}</td><td class="n">{_num(e.get("activation_final"))}</td></tr>'
                for e in record["images"]
            )
            + "</table>\n"
        )
    body.append("</section><section><h2>Model and layer</h2>\n" + _table([*_model_rows(job.sidecar), ("objective", _e(job.sidecar.get("objective")))]))
    body.append("</section><section><h2>Settings</h2>\n" + _table(_flat(job.sidecar["settings"])) + "</section></div>\n")
    title = f"{record['label']} · {job.layer} · {job.model_key[0]} · fv atlas"
    depth = job.rel.count("/") + 2
    return _page(title, _href(where, "atlas.css"), _crumbs(job, depth, unit), "".join(body), links)


# ---- writing ----


def build_atlas(out: Path, say: Callable[[str], None]) -> Result:
    """Write the atlas of everything rendered under `out`; only pages whose bytes change are written.

    Unit pages under a job's units/ folder that no unit of its sidecar names any more are removed.
    """
    out = Path(out)
    if not out.is_dir():
        raise FvError(f"{out}: no such folder; expected the --out folder of fv render")
    jobs = discover(out, say)
    if not jobs:
        raise FvError(f"{out}: nothing rendered to build an atlas from (no readable grid.json below it); run fv render --out {out} first")
    for job in jobs:
        name_pages(job)
    models = group_jobs(jobs)

    pages: dict[Path, str] = {out / "index.html": index_page(models)}
    for job in jobs:
        pages[job.folder / "index.html"] = layer_page(job)
        if job.activation_atlas is not None:
            pages[job.folder / ACTIVATION_PAGE] = activation_page(job)
        for index, unit in enumerate(job.units):
            pages[job.folder / "units" / unit.page] = unit_page(job, index)

    written, unchanged, removed = [], 0, []
    try:
        _write_if_changed(out / "atlas.css", CSS)  # not counted: a style sheet, not a page
        for path, text in pages.items():
            if _write_if_changed(path, text):
                written.append(path)
            else:
                unchanged += 1
        for job in jobs:
            keep = {unit.page for unit in job.units}
            for stale in sorted((job.folder / "units").glob("*.html")):
                if stale.name not in keep:
                    stale.unlink()
                    removed.append(stale)
    except OSError as error:
        raise FvError(f"cannot write the atlas into {out}: {error.strerror or error} ({error.filename})") from None
    gone = f", {len(removed)} removed" if removed else ""
    say(f"fv: atlas: {plural(len(written), 'page')} written, {unchanged} unchanged{gone} -> {out / 'index.html'}")
    return Result(written, unchanged, removed, len(jobs))


# ---- activation atlases (fvcli.atlas.activation_atlas writes atlas.json) ----

ZOOMS = (("half", "½×"), ("one", "1×"), ("double", "2×"), ("quad", "4×"))


def activation_page(job: Job) -> str:
    """JOB/atlas.html: the icons in their cells, zoomable (radio buttons and CSS, no script); a
    click on a cell shows its count, objective, top channels and samples below the grid."""
    record, depth = job.activation_atlas, job.rel.count("/") + 1
    grid, cells = record["grid"], record["cells"]
    pages = {unit.record.get("label"): unit.page for unit in job.units}
    settings = record.get("settings") or {}
    body = [f"<h1>Activation atlas of {_e(record.get('layer'))}</h1>\n"]
    body.append(
        f'<p>{_e((record.get("model") or {}).get("name"))} · {plural(record.get("samples", 0), "sample")} from '
        f'{plural((record.get("images") or {}).get("count", 0), "image")} · {grid["rows"]}×{grid["columns"]} grid · '
        f'{plural(len(cells), "cell")} with at least {_e(settings.get("min_count"))} samples</p>\n'
    )
    body.append(
        f'<p class="dim">{_e(record.get("objective", ""))} · <a href="{_e(grid["image"])}">{_e(grid["image"])}</a> · '
        f'<a href="atlas.json">atlas.json</a> · <a href="index.html">the icons as units</a></p>\n'
    )
    body.append('<div class="zoom">zoom')
    for key, text in ZOOMS:
        checked = " checked" if key == "one" else ""
        body.append(f'<input type="radio" name="zoom" id="zoom-{key}"{checked}><label for="zoom-{key}">{text}</label>')
    body.append(f'\n<div class="aa" style="--n:{int(grid["columns"])}">\n')
    for cell in cells:
        if not cell.get("icon"):
            continue
        anchor = f'c-{int(cell["row"])}-{int(cell["column"])}'
        title = f'row {cell["row"]}, column {cell["column"]}: {cell["count"]} samples'
        body.append(
            f'<a href="#{anchor}" style="grid-row:{int(cell["row"]) + 1};grid-column:{int(cell["column"]) + 1}" title="{_e(title)}">'
            f'<img src="{_href("", cell["icon"])}" alt="{_e(title)}" loading="lazy"></a>\n'
        )
    body.append("</div></div>\n<p class=\"dim\">Click a cell for its samples.</p>\n")
    for cell in cells:
        anchor = f'c-{int(cell["row"])}-{int(cell["column"])}'
        body.append(f'<section class="cell" id="{anchor}"><h2>Cell row {_e(cell["row"])}, column {_e(cell["column"])}</h2>\n<div class="figs">')
        if cell.get("icon"):
            # not lazy: a hidden section's lazy image never loads, nor says it failed
            body.append(f'<figure>{_img(_href("", cell["icon"]), job.size, LARGE // 2, "icon", lazy=False)}<figcaption>icon</figcaption></figure>')
        top = ", ".join(f'{_e(t["channel"])} ({_num(t["value"])})' for t in cell.get("top_channels") or [])
        rows = [
            ("samples", _e(cell.get("count"))), ("objective", f'{_num(cell.get("objective_start"))} → {_num(cell.get("objective"))}'),
            ("status", _e(cell.get("status"))), ("top channels", top),
        ]
        page = pages.get(cell.get("label"))
        if page:
            rows.append(("unit", f'<a href="units/{_e(quote(page))}">{_e(cell.get("label"))}</a>'))
        body.append(f"<div>{_table(rows)}</div></div>\n")
        body.append(f'<h3>Samples nearest the cell\'s average</h3>\n<div class="strip"><img src="{_href("", cell["samples_strip"])}" alt="samples"></div>\n')
        listed = [(_e(s.get("path")), _e(f'y={s["position"][0]}, x={s["position"][1]}')) for s in cell.get("samples") or []]
        body.append(_table(listed) + "</section>\n")
    crumbs = [("../" * depth + "index.html", "Atlas"), (None, job.model_key[0]), ("index.html", job.title), (None, "activation atlas")]
    return _page(f"activation atlas · {record.get('layer')} · fv atlas", _href(job.rel, "atlas.css"), crumbs, "".join(body))


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return True
