"""A small real atlas for the atlas tests: tiny-model renders, dataset examples, then `fv atlas`."""

from __future__ import annotations

import re
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image

from conftest import TINY, fv

ODD_IMAGE = "odd <name> & 'q\".png"  # a file name that needs escaping in HTML attributes


def make_images(folder: Path, count: int = 10) -> Path:
    """Synthetic photos: noise with a coloured band and a bright square at places that vary."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = (rng.random((48, 64, 3)) * 120).astype(np.uint8)
        pixels[:, (i * 6) % 64 : (i * 6) % 64 + 8] = [(i * 40) % 256, 255 - (i * 25) % 256, 90]
        pixels[(i * 5) % 40 : (i * 5) % 40 + 8, 10:18] = 255
        name = ODD_IMAGE if i == 0 else f"photo_{i:02d}.png"
        Image.fromarray(pixels).save(folder / name)
    return folder


def build_site(root: Path) -> Path:
    """OUT with two layers of the tiny model (plain jobs), a named diversity job and a negative job of
    conv3, a job of dead and failed units, dataset examples of every channel job, and the atlas,
    built by the spec's `atlas: true`."""
    out = root / "out"
    images = make_images(root / "images")
    spec = root / "atlas.yaml"
    spec.write_text(textwrap.dedent(f"""
        model: {TINY}
        weights: random
        steps: 2
        size: 32
        out: {out}
        atlas: true
        examples:
          images: {images}
          k: 4
          crop: 32
        jobs:
          - layer: conv2
            channels: 0-7
          - layer: conv3
            channels: 0-5
          - name: conv3-diverse
            layer: conv3
            channels: 0-2
            diversity: 2
          - target: -conv3:0-2
    """))
    fv("render", str(spec), "--quiet")
    broken = TINY.replace(":make", ":make_broken")  # channel 0 ends dead, channel 1 fails
    fv("render", "broken:0-2", "--model", broken, "--steps", "4", "--size", "16", "--out", str(out), "--quiet", "--atlas", code=1)
    return out


class Links(HTMLParser):
    """The tags of a page, its href and src attributes, and its text (all unescaped)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, dict]] = []  # (tag, url, attributes)
        self.tags: list[tuple[str, dict]] = []  # every start tag and its attributes
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        for name in ("href", "src"):
            if attributes.get(name):
                self.links.append((tag, attributes[name], attributes))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def target(page: Path, url: str) -> Path | None:
    """The file a relative link of `page` points at; None for a data: URL."""
    parts = urlsplit(url)
    if parts.scheme == "data":
        return None
    assert not parts.scheme and not parts.netloc and not url.startswith("/"), f"{page}: link leaves the atlas: {url}"
    return (page.parent / unquote(parts.path)).resolve()


def pages(out: Path) -> list[Path]:
    return sorted(out.rglob("*.html"))


def unit_pages(job: Path) -> list[Path]:
    return sorted((job / "units").glob("*.html"), key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.stem)])
