"""The README and docs/ say what is true: their links lead somewhere, their commands parse, and every
option of `fv render` is documented.

- **Links**: every relative link and image of README.md and docs/*.md (outside code) names a file of
  the repository, and a `#anchor` names a heading of that page (GitHub's anchors).
- **Commands**: every line that starts with `fv ` in a fenced shell block (```sh) runs through click's runner
  in this process: `fv render` and `fv examples` with `--dry-run` (which resolves the model, the
  layers, the targets and the spec files, and renders nothing), `fv spectrum` for real (on a few
  small pictures: a later line reads its file), every other command with `--help` (which still
  refuses an unknown option). So a renamed option, a changed target grammar or a spec file gone
  fails here. The commands run in a temporary folder holding a copy of configs/ (with configs/faces/
  made by configs/make_faces.py) and the files the pages name as placeholders (photo.jpg, dirs.npy,
  DIR, OUT, ~/data/imagenet/val, ...). To stay offline, `--weights random` is added to every
  `fv render` and `fv examples` (after the line's own options: click keeps the last), so published
  weights are never downloaded; the layer names are still checked, as the architecture is the same.
- **The marker**: a fenced block whose line before it is `<!-- needs: network -->` or
  `<!-- needs: gpu -->` is not run (none is today).
- **CI**: `.ci/run` runs the README's test command word for word.
- **Options**: every option of `fv render --help` is named in a page of docs/ written by hand, and
  docs/options.md is what docs/make_options.py makes from the settings; the option tables written by
  hand (docs/rendering.md, methods.md, activation-atlases.md) name real options, and their defaults
  are those that `--help` shows.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import noise_photos

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS = re.compile(r"<!--\s*needs:\s*(network|gpu)\s*-->")
GENERATED = ROOT / "docs" / "options.md"


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---- Markdown, read as far as these checks need ----


def _blocks(text: str) -> list[tuple[str, list[str], str]]:
    """The fenced code blocks of a page: (info string, lines, the line before the fence)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^(```+)(.*)$", lines[i])
        if not match:
            i += 1
            continue
        before = next((line for line in reversed(lines[:i]) if line.strip()), "")
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith(match.group(1))), len(lines))
        blocks.append((match.group(2).strip(), lines[i + 1:end], before))
        i = end + 1
    return blocks


def _prose(text: str) -> str:
    """The page without its fenced blocks, indented code blocks and inline code spans."""
    text = re.sub(r"^(```+).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    text = re.sub(r"(?:^|\n\n)((?: {4}[^\n]*\n?)+)", "\n\n", text)
    return re.sub(r"(`+)[^`]*?\1", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation left out, spaces as hyphens."""
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    kept = "".join(c for c in heading if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(page.read_text()).splitlines():
        match = re.match(r"^#{1,6} (.*)$", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(page: Path) -> list[str]:
    text = _prose(page.read_text())
    found = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    found += re.findall(r"<img[^>]+src=\"([^\"]+)\"", text)
    return [link for link in found if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]  # http:, mailto:, ...


def test_the_readme_is_a_front_door_and_docs_hold_one_topic_a_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    assert linked == {page.name for page in PAGES[1:]}, "the README links every page of docs/, and only those"


def test_ci_runs_the_readmes_test_command_word_for_word():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    command = script[script.index("# The test command of README.md, word for word:") + 1]
    assert f"    {command}" in (ROOT / "README.md").read_text().splitlines()


@pytest.mark.parametrize("page", PAGES, ids=_name)
def test_every_relative_link_and_image_resolves(page):
    bad = []
    for link in _links(page):
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or ROOT not in (target, *target.parents):
            bad.append(f"{link}: no such file in the repository")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            bad.append(f"{link}: {_name(target)} has no heading #{anchor}")
    assert not bad, f"{_name(page)}:\n" + "\n".join(bad)


# ---- the commands of the fenced blocks ----


def _commands() -> list[tuple[str, str]]:
    """(page, line) for every `fv ...` line of a fenced block not marked as needing a network or GPU."""
    found = []
    for page in PAGES:
        for info, lines, before in _blocks(page.read_text()):
            if NEEDS.search(before) or info not in ("sh", "bash", "shell", "console"):
                continue
            found += [(_name(page), line.strip()) for line in lines if line.strip().startswith("fv ")]
    once = {}  # a command shown on two pages (the README's everyday ones) runs once
    for page, line in found:
        once.setdefault(shlex.join(shlex.split(line, comments=True)), (page, line))
    return list(once.values())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder to run the pages' commands in: configs/ as in the repository (configs/faces/ made),
    and the files and folders the pages name."""
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "configs", folder / "configs", ignore=shutil.ignore_patterns("faces", "__pycache__"))
    loaded = importlib.util.spec_from_file_location("make_faces", ROOT / "configs" / "make_faces.py")
    make_faces = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(make_faces)
    make_faces.write(folder / "configs" / "faces")
    for images in ("DIR", "photos", "home/data/imagenet/val"):
        noise_photos(folder / images, 4, (64, 64))
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "photo.jpg")
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(folder / "photo.png")
    generator = np.random.default_rng(0)
    np.save(folder / "dirs.npy", generator.standard_normal((64, 512)).astype(np.float32))
    np.save(folder / "v.npy", generator.standard_normal(512).astype(np.float32))
    (folder / "OUT").mkdir()
    return folder


def _arguments(line: str, home: Path) -> list[str]:
    """The line's arguments after `fv`, as the checks run them."""
    assert not re.search(r"&&|\|\||[|;<>`]|\$\(", line.split("#")[0].replace("'", "").replace('"', "")), (
        f"{line!r}: one fv command a line, without pipes or substitutions"
    )
    words = [str(home) + word[1:] if word.startswith("~/") else word for word in shlex.split(line, comments=True)]
    assert words[0] == "fv", line
    command, rest = words[1], words[2:]
    if command in ("render", "examples"):
        end = rest.index("--") if "--" in rest else len(rest)
        return [command, *rest[:end], "--dry-run", "--weights", "random", *rest[end:]]
    if command == "spectrum":
        return [command, *rest, "--size", "16", "--quiet"]
    return [command, *rest, "--help"]


def test_the_pages_show_commands():
    commands = {line.split()[1] for _, line in _commands()}
    assert {"render", "examples", "models", "layers", "atlas", "merge", "spectrum"} <= commands


def test_every_fv_command_of_the_pages_parses(workspace, monkeypatch):
    from fvcli.cli import cli

    monkeypatch.chdir(workspace)
    failed = []
    for page, line in _commands():
        arguments = _arguments(line, workspace / "home")
        result = CliRunner().invoke(cli, arguments, prog_name="fv")
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        if result.exit_code != 0:
            failed.append(f"{page}: {line}\n  fv {shlex.join(arguments)}: exit {result.exit_code}\n  {result.output.strip()[-600:]}")
    assert not failed, "\n".join(failed)
    assert not (workspace / "outputs").exists(), "a dry run wrote nothing"


def test_a_renamed_option_fails_the_check(workspace, monkeypatch):
    from fvcli.cli import cli

    monkeypatch.chdir(workspace)
    for line in ("fv render mixed4a:0-3 --stepz 16", "fv layers --modle resnet18"):
        result = CliRunner().invoke(cli, _arguments(line, workspace), prog_name="fv")
        assert result.exit_code == 2 and "No such option" in result.output, line


# ---- options ----


def _render_options() -> list:
    from fvcli.cli import render

    return [param for param in render.params if param.param_type_name == "option" and param.name != "help"]


def test_every_option_of_fv_render_is_documented_in_a_page_written_by_hand():
    text = "\n".join(page.read_text() for page in PAGES[1:] if page != GENERATED)
    missing = [param.opts[0] for param in _render_options() if not re.search(re.escape(param.opts[0]) + r"(?![\w-])", text)]
    assert not missing, f"options of fv render that no page of docs/ tells of: {missing}"


def test_the_options_page_is_generated_from_the_settings():
    loaded = importlib.util.spec_from_file_location("make_options", ROOT / "docs" / "make_options.py")
    make_options = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(make_options)
    assert GENERATED.read_text() == make_options.page(), "docs/options.md is stale: run python docs/make_options.py"
    assert all(f"`{param.opts[0]}`" in GENERATED.read_text() for param in _render_options())


def _same_default(written: str, shown: str) -> bool:
    written, shown = written.strip("` "), shown.strip()
    try:
        return float(written) == float(shown)
    except ValueError:
        return written == shown


def test_the_option_tables_written_by_hand_agree_with_help():
    """Every row of a hand-written table `| option | default | meaning |` names options of fv render
    and gives the defaults `fv render --help` shows (a row of several options: theirs, comma-separated,
    or one for all)."""
    shown = {}
    for param in _render_options():
        match = re.search(r"\[default: (.*)\]$", param.help or "")
        default = match.group(1) if match else "off" if param.is_flag else ""
        for name in (*param.opts, *param.secondary_opts):
            shown[name] = default
    rows = 0
    for page in PAGES[1:]:
        if page == GENERATED:
            continue
        header: list[str] = []
        for line in page.read_text().splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not line.startswith("|"):
                header = []
                continue
            if not header:
                header = cells  # a table's first row
                continue
            if header != ["option", "default", "meaning"] or set(line) <= set("|-"):
                continue
            names = [name for name in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", cells[0])]
            assert names and all(name in shown for name in names), f"{_name(page)}: {cells[0]} names no option of fv render"
            if not cells[1]:
                continue  # `--param maco`, `--images DIR`: no default of its own
            defaults = [d.strip() for d in cells[1].split(",")]
            defaults = defaults * len(names) if len(defaults) == 1 else defaults
            assert len(defaults) == len(names), f"{_name(page)}: {cells[0]}: {cells[1]}"
            for name, default in zip(names, defaults):
                assert _same_default(default, shown[name]), f"{_name(page)}: {name} defaults to {default}; --help says {shown[name]}"
                rows += 1
    assert rows >= 40
