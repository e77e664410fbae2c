"""`fv atlas`: the pages and their links, escaping, incremental rebuilds, broken folders, errors."""

import json
import os
import shutil
from pathlib import Path

import pytest

from atlas_site import ODD_IMAGE, make_images, pages, parse, target, unit_pages
from conftest import TINY, fv

TINY_ARGS = ["--model", TINY, "--weights", "random", "--steps", "2", "--size", "32"]


@pytest.fixture
def site(atlas_site) -> Path:
    return atlas_site


def test_every_link_and_image_of_every_page_is_a_file_of_the_atlas(site):
    sidecars = sorted(site.rglob("grid.json"))
    assert len(sidecars) == 5
    for sidecar in sidecars:
        job = sidecar.parent
        assert (job / "index.html").is_file()
        assert len(unit_pages(job)) == len(json.loads(sidecar.read_text())["units"])
    checked = 0
    for page in pages(site):
        for tag, url, _ in parse(page).links:
            path = target(page, url)
            if path is not None:
                assert path.is_file() and site.resolve() in path.parents, f"{page}: {tag} {url}"
                checked += 1
    assert checked > 300
    index_links = {target(site / "index.html", url) for _, url, _ in parse(site / "index.html").links}
    assert {s.parent.resolve() / "index.html" for s in sidecars} <= index_links
    assert (site / "atlas.css").is_file()


def test_layer_page_has_a_lazy_sized_thumbnail_for_every_unit_image(site):
    layer = site / "tiny_model.make" / "conv2" / "index.html"
    images = [attrs for tag, _, attrs in parse(layer).links if tag == "img"]
    assert [a["src"] for a in images] == [f"conv2_{c:04d}.png" for c in range(8)]
    assert all(a["loading"] == "lazy" and a["width"] == a["height"] == "128" for a in images)  # 32 px, scaled 4x
    units = [url for tag, url, _ in parse(layer).links if tag == "a" and url.startswith("units/")]
    assert units == [f"units/{c}.html" for c in range(8)]

    broken = site / "tiny_model.make_broken" / "broken" / "index.html"
    parsed = parse(broken)
    assert [url for tag, url, _ in parsed.links if tag == "img"] == ["broken_0000.png", "broken_0002.png"]  # none for the failed unit
    text = " ".join(parsed.text)
    assert "0 dead" in text and "1 failed" in text and "1 dead" in text


def test_unit_page_shows_its_image_other_renders_examples_values_and_neighbours(site):
    page = site / "tiny_model.make" / "conv3" / "units" / "1.html"
    parsed = parse(page)
    urls = [url for _, url, _ in parsed.links]
    assert "../conv3_0001.png" in urls
    assert "../../../conv3-diverse/units/1.html" in urls  # the diversity job of the same layer
    assert "../../../conv3-diverse/conv3_0001_0.png" in urls and "../../../conv3-diverse/conv3_0001_1.png" in urls
    assert "../../neg_conv3_0-2/units/1.html" in urls  # and the negative image
    assert "../examples/0001.png" in urls and "../examples/0001_neg.png" in urls
    assert {"0.html", "2.html", "../index.html", "../../../index.html"} <= set(urls)
    text = " ".join(parsed.text)
    sidecar = json.loads((site / "tiny_model.make" / "conv3" / "grid.json").read_text())
    unit = sidecar["units"][1]
    assert f"{unit['activation_start']:.5g}" in text and f"{unit['activation_final']:.5g}" in text
    examples = json.loads((site / "tiny_model.make" / "conv3" / "examples" / "examples.json").read_text())
    crops = next(u for u in examples["units"] if u["channel"] == 1)
    assert all(f"{c['value']:.5g}" in text for c in crops["top"] + crops["bottom"])
    assert "steps" in text and "pad" in text  # the job's settings

    first, last = (site / "tiny_model.make" / "conv3" / "units" / name for name in ("0.html", "5.html"))
    assert "1.html" in [u for _, u, _ in parse(first).links] and "-1.html" not in first.read_text()
    assert "4.html" in [u for _, u, _ in parse(last).links] and "6.html" not in last.read_text()


def test_a_unit_page_shows_the_step_images_and_alpha_map_its_record_lists(tmp_path):
    out = tmp_path / "out"
    fv("render", "conv2:0", *TINY_ARGS, "--steps", "4", "--save-steps", "1,2", "--alpha-map", "--out", str(out), "--atlas", "--quiet")
    page = out / "tiny_model.make" / "conv2" / "units" / "0.html"
    parsed = parse(page)
    sources = [url for tag, url, _ in parsed.links if tag == "img"]
    for name in ("conv2_0000.step1.png", "conv2_0000.step2.png", "conv2_0000_alpha.png"):
        assert f"../{name}" in sources and (page.parent / ".." / name).is_file()
    assert "after step 2" in " ".join(parsed.text)


def test_dataset_example_file_names_are_escaped(site):
    titles = [attrs.get("title") for page in unit_pages(site / "tiny_model.make" / "conv2") for _, attrs in parse(page).tags]
    assert ODD_IMAGE in titles  # the parser unescapes it back: escaped once, exactly
    assert all("<name>" not in p.read_text() for p in pages(site))


def test_a_model_name_with_markup_is_escaped(tmp_path):
    folder = tmp_path / 'm<b>&"x'
    folder.mkdir()
    shutil.copy(TINY.rsplit(":", 1)[0], folder / "tiny.py")
    out = tmp_path / "out"
    fv("render", "conv2:0-1", *TINY_ARGS, "--model", f"{folder / 'tiny.py'}:make", "--out", str(out), "--atlas", "--quiet")
    for page in pages(out):
        assert "<b>" not in page.read_text()
    assert f"{folder / 'tiny.py'}:make" in " ".join(parse(out / "index.html").text)


def _inodes(out: Path) -> dict[Path, int]:
    """Each page's inode: an atomic write replaces the file, so a rewritten page has a new one."""
    return {p.relative_to(out): p.stat().st_ino for p in [*pages(out), out / "atlas.css"]}


def test_a_rebuild_writes_only_the_pages_that_changed(tmp_path):
    out = tmp_path / "out"
    first = fv("render", "conv2:0-3", *TINY_ARGS, "--out", str(out), "--atlas")
    assert f"fv: atlas: 6 pages written, 0 unchanged -> {out / 'index.html'}" in first
    before = _inodes(out)
    assert f"fv: atlas: 0 pages written, 6 unchanged -> {out / 'index.html'}" in fv("atlas", str(out))
    assert _inodes(out) == before

    fv("render", "conv2:0-4", *TINY_ARGS, "--out", str(out), "--atlas", "--quiet")  # one more unit
    after = _inodes(out)
    changed = {path for path in after if before.get(path) != after[path]}
    job = Path("tiny_model.make/conv2")
    assert changed == {Path("index.html"), job / "index.html", job / "units/3.html", job / "units/4.html"}

    # The job rendered again with fewer units: the pages of units it no longer has go.
    output = fv("render", "conv2:0-2", *TINY_ARGS, "--out", str(out), "--atlas")
    assert "fv: atlas: 3 pages written, 2 unchanged, 2 removed" in output  # index, layer, units/2
    assert sorted(p.name for p in (out / job / "units").iterdir()) == ["0.html", "1.html", "2.html"]


def test_broken_job_folders_are_skipped_with_one_line_each(tmp_path):
    out = tmp_path / "out"
    fv("render", "conv2:0-1", "conv3:0-1", *TINY_ARGS, "--out", str(out), "--quiet")
    good = out / "tiny_model.make"
    shutil.copytree(good / "conv2", out / "corrupt")
    (out / "corrupt" / "grid.json").write_text('{"schema_version": 1, "units": [')  # cut short
    shutil.copytree(good / "conv3", out / "no-pngs")
    for png in (out / "no-pngs").glob("conv3_*.png"):
        png.unlink()
    shutil.copytree(good / "conv3", out / "newer")
    sidecar = json.loads((out / "newer" / "grid.json").read_text())
    (out / "newer" / "grid.json").write_text(json.dumps({**sidecar, "schema_version": 2}))

    lines = fv("atlas", str(out)).strip().splitlines()
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 3 and len(lines) == 4, lines
    assert f"skipped {out / 'corrupt'}: unreadable grid.json" in skipped[0]
    assert f"skipped {out / 'newer'}: unreadable grid.json (schema_version 2" in skipped[1]
    assert f"skipped {out / 'no-pngs'}: grid.json lists 2 units, but none of their PNGs is there" in skipped[2]
    links = [url for _, url, _ in parse(out / "index.html").links]
    assert "tiny_model.make/conv2/index.html" in links and "tiny_model.make/conv3/index.html" in links
    assert not any(folder in url for url in links for folder in ("corrupt", "no-pngs", "newer"))

    (good / "conv2" / "conv2_0001.png").unlink()  # one image gone: a gap, not a broken <img>
    output = fv("atlas", str(out))
    assert f"{good / 'conv2'}: 1 unit image named in grid.json is missing; shown as gaps" in output
    assert "conv2_0001.png" not in (good / "conv2" / "index.html").read_text()


@pytest.mark.parametrize("where, message", [
    ("missing", "missing: no such folder; expected the --out folder of fv render"),
    ("empty", "empty: nothing rendered to build an atlas from (no readable grid.json below it)"),
])
def test_nothing_to_build_from_exits_2_with_one_line(tmp_path, where, message):
    (tmp_path / "empty").mkdir()
    output = fv("atlas", str(tmp_path / where), code=2)
    assert output.count("\n") == 1 and output.startswith("fv: error: ") and message in output


def test_a_job_folder_is_not_an_atlas_folder(tmp_path):
    fv("render", "conv2:0", *TINY_ARGS, "--out", str(tmp_path), "--quiet")
    output = fv("atlas", str(tmp_path / "tiny_model.make" / "conv2"), code=2)
    assert f"give the --out folder it was rendered into, {tmp_path.resolve()}" in output


def test_a_layer_page_of_512_units_stays_small(tmp_path):
    """512 units as GoogLeNet's mixed4a names them, from one real render's files and records."""
    out = tmp_path / "out"
    fv("render", "conv2:0", *TINY_ARGS, "--out", str(out), "--quiet")
    source = out / "tiny_model.make" / "conv2"
    job = out / "googlenet" / "mixed4a"
    job.mkdir(parents=True)
    sidecar = json.loads((source / "grid.json").read_text())
    record = sidecar["units"][0]
    units = []
    for c in range(512):
        name = f"mixed4a_{c:04d}.png"
        os.link(source / record["image"], job / name)
        units.append({**record, "channel": c, "label": str(c), "objective": f"mixed4a:{c}", "image": name})
    sidecar.update(units=units, layer="mixed4a", layer_module="inception4a")
    sidecar["settings"]["size"] = 128
    (job / "grid.json").write_text(json.dumps(sidecar))
    fv("atlas", str(out), "--quiet")
    assert (job / "index.html").stat().st_size < 100_000
    assert max(p.stat().st_size for p in (job / "units").iterdir()) < 10_000
    assert (out / "index.html").stat().st_size < 10_000


def test_a_shard_builds_no_atlas(tmp_path):
    output = fv("render", "conv2:0-1", *TINY_ARGS, "--out", str(tmp_path), "--shard", "0/2", "--atlas")
    assert "fv: a shard builds no atlas; run fv atlas OUT once every shard is done" in output
    assert not (tmp_path / "index.html").exists()


def test_dataset_examples_of_other_weights_are_not_shown(tmp_path):
    out = tmp_path / "out"
    fv("render", "conv2:0-1", *TINY_ARGS, "--out", str(out), "--quiet")
    images = make_images(tmp_path / "images", count=3)
    fv("examples", "conv2:0-1", "--model", TINY, "--weights", "random", "--seed", "1", "--images", str(images), "--out", str(out), "--quiet")
    output = fv("atlas", str(out))
    assert "examples.json: ignored, it is of" in output and "random(seed=1)" in output and "random(seed=0)" in output
    assert "examples/" not in (out / "tiny_model.make" / "conv2" / "units" / "0.html").read_text()


def test_a_models_layers_are_listed_in_forward_order(tmp_path):
    # Named in natural order these would read conv2, conv3, fc, relu3; the network computes relu3 before fc.
    fv("render", "fc:0", "relu3:0", "conv2:0", "conv3:0", *TINY_ARGS, "--out", str(tmp_path), "--quiet")
    assert json.loads((tmp_path / "tiny_model.make" / "relu3" / "grid.json").read_text())["layer_order"] == 7
    fv("atlas", str(tmp_path), "--quiet")
    layers = [url.split("/")[1] for tag, url, _ in parse(tmp_path / "index.html").links if tag == "a" and url.endswith("/index.html")]
    assert list(dict.fromkeys(layers)) == ["conv2", "conv3", "relu3", "fc"]


def test_paths_in_sidecars_that_lead_outside_out_are_skipped(tmp_path):
    """docs/reliability.md promises that the atlas loads nothing from outside OUT: an image or strip named with
    '..', an absolute path, a URL, or through a symlink is left out with a line each."""
    out = tmp_path / "out"
    fv("render", "conv2:0-5", "conv3:0", *TINY_ARGS, "--out", str(out), "--quiet")  # unit 5 stays as it is
    images = make_images(tmp_path / "images", count=3)
    fv("examples", "conv2:0-1", "--model", TINY, "--weights", "random", "--images", str(images), "--out", str(out), "--quiet")
    job = out / "tiny_model.make" / "conv2"
    outside = tmp_path / "secret.png"
    shutil.copy(job / "conv2_0004.png", outside)
    (job / "conv2_0004.png").unlink()
    (job / "conv2_0004.png").symlink_to(outside)
    sidecar = json.loads((job / "grid.json").read_text())
    escapes = ["../../../../../../etc/passwd", str(outside), f"file://{outside}", "http://example.com/x.png"]
    for unit, name in zip(sidecar["units"], escapes):
        unit["image"] = name
    (job / "grid.json").write_text(json.dumps(sidecar))
    examples = json.loads((job / "examples" / "examples.json").read_text())
    examples["units"][0]["strip"] = "../../../../../etc/passwd"
    (job / "examples" / "examples.json").write_text(json.dumps(examples))
    other = out / "tiny_model.make" / "conv3"
    (tmp_path / "elsewhere").mkdir()
    (other / "units").symlink_to(tmp_path / "elsewhere")  # pages written there would land outside OUT

    lines = fv("atlas", str(out)).strip().splitlines()
    sidecar_path = job / "grid.json"
    for label, name in enumerate(escapes):
        assert f"fv: atlas: {sidecar_path}: unit {label}: skipped image {name!r}, not a file inside {out}" in lines
    assert f"fv: atlas: {sidecar_path}: unit 4: skipped image 'conv2_0004.png', not a file inside {out}" in lines
    assert f"fv: atlas: {job / 'examples' / 'examples.json'}: channel 0: skipped strip '../../../../../etc/passwd', not a file inside {out}" in lines
    assert f"fv: atlas: skipped {other}: units is a link to outside {out}" in lines
    assert not any((tmp_path / "elsewhere").iterdir())
    for page in pages(out):
        text = page.read_text()
        assert "passwd" not in text and "secret" not in text and "example.com" not in text, page
        for tag, url, _ in parse(page).links:
            path = target(page, url)
            assert path is None or out.resolve() in path.parents, f"{page}: {tag} {url}"
