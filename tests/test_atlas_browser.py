"""The atlas in a real browser: headless Chromium (Debian's package) driven by Playwright, over file://
and over a static HTTP server. Every page loads without errors, every image loads, links work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def site(atlas_site) -> Path:
    return atlas_site


@pytest.fixture(scope="module")
def browser():
    # Fail, never skip: CI must run this test (the README's test command installs Chromium).
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: install Debian's package (apt-get install -y chromium), as the README's test command does", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install -e '.[test]'", pytrace=False)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:  # a fresh --user-data-dir
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS, viewport={"width": 1000, "height": 700}
        )
        context.set_default_timeout(10_000)  # a broken link fails in seconds, not Playwright's 30
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def server(atlas_site):
    """`python -m http.server` on a free loopback port, serving the atlas."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(atlas_site)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        line = process.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        match = re.search(r"port (\d+)", line)
        assert match, f"http.server said {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(params=["file", "http"])
def base(request, site) -> str:
    return site.resolve().as_uri() + "/" if request.param == "file" else request.getfixturevalue("server")


def _watch(page) -> list[str]:
    """Everything that went wrong on a page: console errors, script errors, failed or refused requests."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    return problems


# Scroll down a screen at a time (lazy images load only near the view), wait until every image is
# done; then the page's title, the images that did not load, how many there are, and the links.
VISIT = """async () => {
    for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight) {
        scrollTo(0, y);
        await new Promise(requestAnimationFrame);
    }
    const images = [...document.images];
    await Promise.all(images.map(i => i.complete ? null : new Promise(done => { i.onload = i.onerror = done; })));
    return {
        title: document.title,
        broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
        images: images.length,
        links: [...document.links].map(a => a.href.split("#")[0]),
    };
}"""


def test_every_page_and_image_loads_without_errors(site, browser, base):
    """Over file:// every page the index leads to; over HTTP the index and the layer pages."""
    page = browser.new_page()
    problems = _watch(page)
    todo, seen, images = [base + "index.html"], set(), 0
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        page.goto(url)
        visit = page.evaluate(VISIT)
        assert visit["title"].endswith("fv atlas") and visit["broken"] == [], (url, visit)
        images += visit["images"]
        if base.startswith("file:") or url == base + "index.html":
            todo.extend(link for link in visit["links"] if link.startswith(base) and link.endswith(".html"))
    if base.startswith("file:"):
        assert len(seen) == len(list(site.rglob("*.html"))) and images > 100
    else:
        assert len(seen) == 1 + len(list(site.rglob("grid.json"))) and images >= 25
    assert problems == []
    page.close()


def test_links_lead_from_index_to_layer_to_unit_and_back(site, browser, base):
    page = browser.new_page()
    problems = _watch(page)
    page.goto(base + "index.html")
    page.click("a[href='tiny_model.make/conv3/index.html'] >> text=conv3")
    page.wait_for_url(base + "tiny_model.make/conv3/index.html")
    assert page.locator("h1").inner_text().startswith("conv3")
    assert page.locator(".grid img").count() == 6
    page.click(".grid a[href='units/1.html']")
    page.wait_for_url(base + "tiny_model.make/conv3/units/1.html")
    assert page.locator("h1").inner_text().strip() == "conv3:1"
    page.click(".pager a[rel=next]")
    page.wait_for_url(base + "tiny_model.make/conv3/units/2.html")
    page.click("a[href='../../neg_conv3_0-2/units/2.html'] >> nth=0")  # the negative image of the same channel
    page.wait_for_url(base + "tiny_model.make/neg_conv3_0-2/units/2.html")
    assert page.locator("h1").inner_text().strip() == "-conv3:2"
    page.click(".pager a[rel=prev]")
    page.wait_for_url(base + "tiny_model.make/neg_conv3_0-2/units/1.html")
    page.click("text=↑ neg_conv3_0-2")
    page.wait_for_url(base + "tiny_model.make/neg_conv3_0-2/index.html")
    page.click("nav >> text=Atlas")
    page.wait_for_url(base + "index.html")
    assert problems == []
    page.close()


@pytest.fixture(scope="module")
def activation_site(tmp_path_factory) -> Path:
    """A small activation atlas of the tiny model (synthetic photos), with the web atlas built."""
    from atlas_site import make_images
    from conftest import TINY, fv

    root = tmp_path_factory.mktemp("activation")
    images = make_images(root / "images")
    fv("render", "--activation-atlas", "conv3", "--images", str(images), "--model", TINY, "--weights", "random",
       "--samples", "40", "--grid", "4", "--min-count", "2", "--steps", "2", "--size", "32", "--out", str(root / "out"), "--atlas", "-q")
    return root / "out"


def test_the_activation_atlas_page_loads_zooms_and_shows_a_cells_samples(activation_site, browser):
    from atlas_site import parse, target

    page_file = activation_site / "tiny_model.make" / "atlas-conv3" / "atlas.html"
    record = __import__("json").loads((page_file.parent / "atlas.json").read_text())
    for _, url, _ in parse(page_file).links:  # every link and image of the page is a file of the atlas
        path = target(page_file, url.split("#")[0]) if not url.startswith("#") else None
        assert path is None or path.is_file(), url
    index = (activation_site / "index.html").read_text()
    assert "atlas-conv3/atlas.html" in index
    page = browser.new_page()
    problems = _watch(page)
    page.goto(page_file.resolve().as_uri())
    visit = page.evaluate(VISIT)
    assert visit["broken"] == [] and visit["images"] >= 2 * len(record["cells"]) + 1, visit
    cell = record["cells"][0]
    anchor = f"#c-{cell['row']}-{cell['column']}"
    assert not page.is_visible(anchor)
    icon = page.locator(f'.aa a[href="{anchor}"] img')
    width = icon.bounding_box()["width"]
    page.click("label[for=zoom-double]")
    assert icon.bounding_box()["width"] == 2 * width
    page.click(f'.aa a[href="{anchor}"]')
    assert page.is_visible(anchor) and page.url.endswith(anchor)
    section = page.locator(anchor)
    assert f"{cell['count']}" in section.inner_text() and cell["samples"][0]["path"] in section.inner_text()
    page.click(f'{anchor} a[href^="units/"]')  # its unit page, and back
    # Wait for the unit page to load: going back while its stylesheet is on the way aborts that request.
    page.wait_for_url("**/units/*.html")
    page.go_back()
    page.wait_for_url(f"**/atlas.html{anchor}")
    assert problems == []
    page.close()
