"""`fv atlas OUT`: a static web atlas of everything rendered under OUT. No torch, no framework.

The atlas is built from what is on disk: every job folder (found by its `grid.json` sidecar), its
unit PNGs, and its dataset examples (`examples/examples.json`, written by `fv examples`). It writes

    OUT/index.html                    models -> layers, with unit counts and a thumbnail each
    OUT/atlas.css                     the one style sheet
    JOB/index.html                    a layer page: every unit as a lazy-loaded thumbnail
    JOB/units/LABEL.html              a unit page: its images, other renders of the same channel,
                                      dataset examples, its record and the job's settings

What is on disk is found by fvcli.atlas.discovery, the markup is fvcli.atlas.markup's; this module
draws the pages and writes them.

Links are relative, so the atlas works from file:// and from any static server. Every page is made
in memory and written (atomically) only when its bytes differ, so rebuilding after a few more units
rewrites only the pages that changed. Pages hold nothing that changes between identical builds: no
build time, and no timing from the sidecar.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from fvcli.errors import FvError, WriteError
from fvcli.messages import plural
from fvcli.files import atomic_write, in_one_line, open_regular, read_back
from fvcli.owned import remove_own, replaceable
from fvcli.atlas.markup import CSS, display, fv_file, escape, flattened, href_to, html_page, img, num, scalar, status_text, table
from fvcli.atlas.discovery import ACTIVATION_PAGE, Job, Unit, discover, group_jobs, name_pages

THUMB = 128  # px: thumbnails on layer pages (smaller images are scaled up by a whole factor)
LARGE = 256  # px: images on unit pages
INDEX_THUMB = 64
CROP = 96  # px: dataset example crops are shown at least about this large

@dataclass
class Result:
    written: list[Path]
    unchanged: int
    removed: list[Path]
    jobs: int



def _thumb_cell(job: Job, unit: Unit) -> str:
    record = unit.record
    status = str(record.get("status"))
    label = escape(record["label"]) + ("" if status == "ok" else f" {escape(status)}")
    cls = "" if status == "ok" else f' class="{escape(status)}"'
    if unit.images:
        picture = img(href_to(job.rel, f"{job.rel}/{unit.images[0]['image']}"), job.size, THUMB, record["label"])
    else:
        shown, _ = display(job.size, THUMB)
        kind = "x" if status == "failed" else "x missing"
        picture = f'<div class="{kind}" style="width:{shown}px;height:{shown}px"></div>'
    return f'<a{cls} href="units/{escape(quote(unit.page))}">{picture}{label}</a>\n'


def index_page(models: dict[tuple[str, str], dict[str, list[Job]]]) -> str:
    jobs = [job for layers in models.values() for group in layers.values() for job in group]
    units = sum(len(job.units) for job in jobs)
    body = [f"<h1>Feature visualization atlas</h1>\n<p class=\"dim\">{plural(len(models), 'model')}, {plural(len(jobs), 'job')}, {plural(units, 'unit')}</p>\n"]
    for (name, weights), layers in models.items():
        architecture = next(iter(layers.values()))[0].sidecar["model"].get("architecture")
        body.append(f'<h2>{escape(name)} <span class="dim">· weights {escape(weights)}</span></h2>\n')
        if architecture and architecture != name:
            body.append(f'<p class="dim">{escape(architecture)}</p>\n')
        body.append(
            '<table><tr><th></th><th>layer</th><th>job</th><th class="n">units</th><th class="n">dead</th>'
            '<th class="n">flat</th><th class="n">failed</th><th>images</th><th></th></tr>\n'
        )
        for group in layers.values():
            for job in group:
                first = next((u for u in job.units if u.images and u.record.get("status") == "ok"), None)
                first = first or next(u for u in job.units if u.images)
                thumb = img(href_to("", f"{job.rel}/{first.images[0]['image']}"), job.size, INDEX_THUMB, first.record["label"])
                link = href_to("", f"{job.rel}/index.html")
                settings = job.sidecar["settings"]
                dead, flat, failed = job.count("dead"), job.count("flat"), job.count("failed")
                body.append(
                    f'<tr><td><a href="{link}">{thumb}</a></td><td><a href="{link}">{escape(job.layer)}</a></td>'
                    f"<td>{escape(job.rel)}{''.join(f'<span class=tag>{escape(t)}</span>' for t in job.tags)}</td>"
                    f'<td class="n">{len(job.units)}</td>'
                    f'<td class="n{" dead" if dead else ""}">{dead}</td><td class="n{" flat" if flat else ""}">{flat}</td>'
                    f'<td class="n{" failed" if failed else ""}">{failed}</td>'
                    f'<td class="dim">{escape(settings.get("size"))} px, {escape(settings.get("steps"))} steps</td>'
                    f"<td>{'examples' if _examples_of(job) else ''}"
                    + (f' <a href="{href_to("", f"{job.rel}/{ACTIVATION_PAGE}")}">activation atlas</a>' if job.activation_atlas else "")
                    + "</td></tr>\n"
                )
        body.append("</table>\n")
    return html_page("fv atlas", "atlas.css", [(None, "Atlas")], "".join(body))


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
    tags = "".join(f'<span class="tag">{escape(t)}</span>' for t in job.tags)
    body = [f"<h1>{escape(job.layer)}{tags}</h1>\n"]
    body.append(f'<p>{escape(sidecar["model"].get("name"))} · weights {escape(sidecar["model"].get("weights"))} · {counts}</p>\n')
    body.append(f'<p class="dim">{escape(sidecar.get("objective", ""))}</p>\n')
    body.append(
        f'<p class="dim">{escape(settings.get("size"))} px, {escape(settings.get("steps"))} steps · '
        f'<a href="grid.png">grid.png</a> · <a href="grid.json">grid.json</a></p>\n'
    )
    if job.activation_atlas is not None:
        body.append(f'<p>These are the icons of an activation atlas: <a href="{ACTIVATION_PAGE}">the atlas</a>, one icon a cell</p>\n')
    others = [other for other in job.group if other is not job]
    if others:
        links = ", ".join(f'<a href="{href_to(job.rel, f"{o.rel}/index.html")}">{escape(o.rel)}</a>' for o in others)
        body.append(f'<p class="dim">Also of this layer: {links}</p>\n')
    column = max(display(job.size, THUMB)[0] + 8, 56)  # room for the label of a small image
    body.append(
        f'<div class="grid" style="grid-template-columns:repeat(auto-fill,{column}px)">\n'
        + "".join(_thumb_cell(job, unit) for unit in job.units)
        + "</div>\n"
    )
    origin = sidecar.get("job", {}).get("origin")
    meta = [("job folder", escape(job.rel)), ("made by", escape(origin)), ("fv", escape(sidecar.get("fv_version")))]
    meta += _model_rows(sidecar)
    body.append('<div class="cols"><section><h2>Job</h2>\n' + table(meta))
    body.append("</section><section><h2>Settings</h2>\n" + table(flattened(settings)) + "</section></div>\n")
    return html_page(f"{job.layer} · {job.model_key[0]} · fv atlas", href_to(job.rel, "atlas.css"), _crumbs(job, depth), "".join(body))


def _model_rows(sidecar: dict) -> list[tuple[str, str]]:
    model = sidecar["model"]
    layout = sidecar.get("layer_layout") or {}
    rows = [
        ("model", escape(model.get("name"))),
        ("architecture", escape(model.get("architecture"))),
        ("weights", escape(model.get("weights"))),
    ]
    if model.get("weights_sha256"):
        rows.append(("weights sha256", f"<code>{escape(model['weights_sha256'])}</code>"))
    rows += [
        ("layer", escape(sidecar.get("layer"))),
        ("module", escape(sidecar.get("layer_module"))),
        ("output shape", escape(scalar(sidecar.get("layer_shape")))),
        ("layout", escape(" ".join(f"{k} {scalar(v)}" for k, v in layout.items()))),
    ]
    if sidecar.get("model_input_size"):
        rows.append(("model input size", escape(sidecar["model_input_size"])))
    for item in sidecar.get("files") or []:  # the photos and direction files the objectives were made from
        if isinstance(item, dict):
            rows.append(("file", f"{escape(item.get('path'))} <code>{escape(item.get('sha256'))}</code>"))
    return rows


def _unit_figures(job: Job, unit: Unit, where: str) -> str:
    """The unit's images, large, each with its objective and activation values."""
    figures = []
    for entry in unit.images:
        src = href_to(where, f"{job.rel}/{entry['image']}")
        values = f"{num(entry.get('activation_start'))} → {num(entry.get('activation_final'))}"
        figures.append(
            f"<figure>{img(src, job.size, LARGE, entry.get('objective') or unit.record['label'], lazy=False)}"
            f"<figcaption>{escape(entry.get('objective'))} · {values}</figcaption></figure>"
        )
    if not unit.images:
        shown, _ = display(job.size, LARGE)
        kind = "x" if unit.record.get("status") == "failed" else "x missing"
        reason = unit.record.get("error") or ("failed" if unit.record.get("status") == "failed" else "image missing")
        figures.append(f'<figure><div class="{kind}" style="width:{shown}px;height:{shown}px"></div><figcaption>{escape(reason)}</figcaption></figure>')
    extras = [  # the files an option wrote beside the images: step images, alpha maps, upscaled images
        f'<figure><a href="{href_to(where, f"{job.rel}/{name}")}">{img(href_to(where, f"{job.rel}/{name}"), job.size, THUMB, caption)}</a>'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
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
        link = href_to(where, f"{other.rel}/units/{match.page}")
        pictures = "".join(img(href_to(where, f"{other.rel}/{e['image']}"), other.size, THUMB, e.get("objective") or "") for e in match.images)
        pictures = f'<span class="imgs">{pictures}</span>' if pictures else status_text(match.record)
        what = ", ".join(other.tags) or other.rel
        figures.append(
            f'<figure><a href="{link}">{pictures}</a><figcaption><a href="{link}">{escape(match.record.get("objective"))}</a>'
            f" · {escape(what)}</figcaption></figure>"
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
    about = f"{escape(images['seen'])} images" if images.get("seen") is not None else ""
    if images.get("folder"):
        about += f" of {escape(Path(str(images['folder'])).name)}/"
    parts = [f'<h2>Dataset examples <span class="dim">{about}</span></h2>\n<div class="cols">']
    for key, strip, title in (("top", "strip", "Most activating"), ("bottom", "negative_strip", "Most suppressing")):
        crops = [c for c in entry.get(key) or [] if isinstance(c, dict)]
        path = source.folder / "examples" / str(entry.get(strip)) if entry.get(strip) else None
        if not crops and path is None:
            continue
        # After a ReLU the bottom crops all sit at 0: they are ranked by their mean, so show that.
        tied = len(crops) > 1 and len({c.get("value") for c in crops}) == 1 and all("mean" in c for c in crops)
        shown = "mean" if tied else "value"
        note = f' <span class="dim">all at {num(crops[0].get("value"))}; means below</span>' if tied else ""
        parts.append(f"<section><h3>{title}{note}</h3>\n")
        if path is not None and path.is_file():
            width, height = _png_size(path)
            factor = max(1, CROP // height) if height else 1  # small crops grow, so their values fit under them
            width, height = width * factor, height * factor
            src = href_to(where, f"{source.rel}/examples/{entry[strip]}")
            parts.append(
                f'<div class="strip" style="width:{width}px"><img src="{src}" width="{width}" height="{height}" '
                f'alt="{escape(title)} crops"{" class=px" if factor > 1 else ""} loading="lazy">'
            )
        else:
            parts.append('<div class="strip">')
        # one cell per crop, the strip's width shared alike, so that each value stands under its crop
        cells = "".join(
            f'<span title="{escape(c.get("path"))}">{num(c.get(shown))}</span>' for c in crops
        )
        parts.append(f'<div class="vals" style="grid-template-columns:repeat({max(1, len(crops))},1fr)">{cells}</div></div></section>\n')
    return "".join(parts) + "</div>\n"


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (0, 0 when it is not one)."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY, follow=True), "rb") as file:
            head = file.read(24)
    except OSError:
        return 0, 0
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def unit_page(job: Job, index: int) -> str:
    unit, record = job.units[index], job.units[index].record
    where = f"{job.rel}/units"
    prev = job.units[index - 1] if index > 0 else None
    nxt = job.units[index + 1] if index + 1 < len(job.units) else None
    links = "".join(f'<link rel="{rel}" href="{escape(quote(u.page))}">' for rel, u in (("prev", prev), ("next", nxt)) if u)

    def pager_link(u: Unit | None, text: str, rel: str) -> str:
        if u is None:
            return f'<span class="off">{text}</span>'
        return f'<a rel="{rel}" href="{escape(quote(u.page))}">{text} {escape(u.record["label"])}</a>'

    body = [f"<h1>{escape(record.get('objective') or record['label'])} {'' if record.get('status') == 'ok' else status_text(record)}</h1>\n"]
    body.append(
        f'<div class="pager">{pager_link(prev, "← previous", "prev")}<a href="../index.html">↑ {escape(job.title)}</a>'
        f'{pager_link(nxt, "next →", "next")}</div>\n'
    )
    siblings = _siblings(job, unit, where)
    body.append('<div class="cols"><section><h2>Visualization</h2>\n' + _unit_figures(job, unit, where) + "</section>")
    body.append((f"<section>{siblings}</section>" if siblings else "") + "</div>\n")
    body.append(_dataset_examples(job, unit, where))
    rows = [(k, escape(scalar(record.get(k)))) for k in ("label", "channel", "direction", "objective") if k in record]
    rows.append(("status", status_text(record)))
    if record.get("reason"):
        rows.append(("why", escape(record["reason"])))
    if record.get("error"):
        rows.append(("error", escape(record["error"])))
    rows += [
        ("activation start", num(record.get("activation_start"))),
        ("activation final", num(record.get("activation_final"))),
        ("seed", escape(record.get("seed"))),
    ]
    if "diversity_similarity" in record:
        rows.append(("diversity similarity", num(record["diversity_similarity"])))
    body.append('<div class="cols"><section><h2>Unit</h2>\n' + table(rows))
    if len(record.get("images") or []) > 1:
        body.append(
            '<table><tr><th>image</th><th>objective</th><th class="n">activation start</th><th class="n">final</th></tr>'
            + "".join(
                f"<tr><td>{escape(e.get('image'))}</td><td>{escape(e.get('objective'))}</td>"
                f'<td class="n">{num(e.get("activation_start"))}</td><td class="n">{num(e.get("activation_final"))}</td></tr>'
                for e in record["images"]
            )
            + "</table>\n"
        )
    body.append("</section><section><h2>Model and layer</h2>\n" + table([*_model_rows(job.sidecar), ("objective", escape(job.sidecar.get("objective")))]))
    body.append("</section><section><h2>Settings</h2>\n" + table(flattened(job.sidecar["settings"])) + "</section></div>\n")
    title = f"{record['label']} · {job.layer} · {job.model_key[0]} · fv atlas"
    depth = job.rel.count("/") + 2
    return html_page(title, href_to(where, "atlas.css"), _crumbs(job, depth, unit), "".join(body), links)


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

    # fv replaces and removes only its own pages (fvcli.owned): a user's index.html is refused up front
    css = out / "atlas.css"
    foreign = [path for path in [css, *pages] if not replaceable(path, out, fv_file)]
    if foreign:
        raise FvError(
            f"{foreign[0]} is not a file fv atlas wrote (or leads out of {out}){f' (and {len(foreign) - 1} more)' if len(foreign) > 1 else ''}; "
            "fv leaves it as it is: move it away, or build the atlas of another folder"
        )
    written, unchanged, removed = [], 0, []
    try:
        _write_if_changed(css, CSS)  # not counted: a style sheet, not a page
        for path, text in pages.items():
            if _write_if_changed(path, text):
                written.append(path)
            else:
                unchanged += 1
        for job in jobs:
            keep = {unit.page for unit in job.units}
            stale_pages = [page for page in sorted((job.folder / "units").glob("*.html")) if page.name not in keep]
            if job.activation_atlas is None:  # an atlas page whose atlas.json is gone or damaged
                stale_pages.append(job.folder / ACTIVATION_PAGE)
            removed += [stale for stale in stale_pages if remove_own(stale, out, fv_file)]
    except (OSError, WriteError) as error:
        path, reason = (error.path, error.reason) if isinstance(error, WriteError) else (error.filename, in_one_line(error))
        raise FvError(f"cannot write the atlas into {out}: {reason} ({path})") from None
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
    body = [f"<h1>Activation atlas of {escape(record.get('layer'))}</h1>\n"]
    body.append(
        f'<p>{escape((record.get("model") or {}).get("name"))} · {plural(record.get("samples", 0), "sample")} from '
        f'{plural((record.get("images") or {}).get("count", 0), "image")} · {grid["rows"]}×{grid["columns"]} grid · '
        f'{plural(len(cells), "cell")} with at least {escape(settings.get("min_count"))} samples</p>\n'
    )
    body.append(
        f'<p class="dim">{escape(record.get("objective", ""))} · <a href="{escape(grid["image"])}">{escape(grid["image"])}</a> · '
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
            f'<a href="#{anchor}" style="grid-row:{int(cell["row"]) + 1};grid-column:{int(cell["column"]) + 1}" title="{escape(title)}">'
            f'<img src="{href_to("", cell["icon"])}" alt="{escape(title)}" loading="lazy"></a>\n'
        )
    body.append("</div></div>\n<p class=\"dim\">Click a cell for its samples.</p>\n")
    for cell in cells:
        anchor = f'c-{int(cell["row"])}-{int(cell["column"])}'
        body.append(f'<section class="cell" id="{anchor}"><h2>Cell row {escape(cell["row"])}, column {escape(cell["column"])}</h2>\n<div class="figs">')
        if cell.get("icon"):
            # not lazy: a hidden section's lazy image never loads, nor says it failed
            body.append(f'<figure>{img(href_to("", cell["icon"]), job.size, LARGE // 2, "icon", lazy=False)}<figcaption>icon</figcaption></figure>')
        top = ", ".join(f'{escape(t["channel"])} ({num(t["value"])})' for t in cell.get("top_channels") or [])
        rows = [
            ("samples", escape(cell.get("count"))), ("objective", f'{num(cell.get("objective_start"))} → {num(cell.get("objective"))}'),
            ("status", escape(cell.get("status"))), ("top channels", top),
        ]
        page = pages.get(cell.get("label"))
        if page:
            rows.append(("unit", f'<a href="units/{escape(quote(page))}">{escape(cell.get("label"))}</a>'))
        body.append(f"<div>{table(rows)}</div></div>\n")
        body.append(f'<h3>Samples nearest the cell\'s average</h3>\n<div class="strip"><img src="{href_to("", cell["samples_strip"])}" alt="samples"></div>\n')
        listed = [(str(s.get("path")), escape(f'y={s["position"][0]}, x={s["position"][1]}')) for s in cell.get("samples") or []]
        body.append(table(listed) + "</section>\n")
    crumbs = [("../" * depth + "index.html", "Atlas"), (None, job.model_key[0]), ("index.html", job.title), (None, "activation atlas")]
    return html_page(f"activation atlas · {record.get('layer')} · fv atlas", href_to(job.rel, "atlas.css"), crumbs, "".join(body))


def _write_if_changed(path: Path, text: str) -> bool:
    data = text.encode("utf-8")
    try:
        if read_back(path, follow=False) == data:
            return False
    except OSError:
        pass
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return True
