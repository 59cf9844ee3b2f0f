"""Every relative link in README.md and docs/ leads to a file that exists, and to a heading in it.

A reader who follows a link from the README into docs/ and lands on a 404 stops trusting the rest;
renaming a page or a heading is the usual cause, and nothing else would notice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Pages other branches are writing. Links to them are allowed to dangle until they are merged;
#: the lead empties this set once they are.
FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def prose(path: Path) -> str:
    """The text a reader sees as links: code blocks and code spans removed."""
    return INLINE_CODE.sub("", FENCED_BLOCK.sub("", path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCED_BLOCK.sub("", path.read_text(encoding="utf-8"))
    return {slug(match) for match in HEADING.findall(text)}


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(path)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        name = linked.relative_to(ROOT).as_posix() if linked.is_relative_to(ROOT) else str(linked)
        if not linked.exists():
            problems.append(f"{target}: {name} does not exist")
            continue
        if fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{target}: {name} has no heading whose anchor is #{fragment}")
    return problems


@pytest.mark.parametrize("path", documents(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_an_existing_file_and_heading(path: Path) -> None:
    assert broken_links(path) == [], f"broken links in {path.relative_to(ROOT)}"


def test_the_docs_are_found() -> None:
    """Guards the test above: if the glob found nothing, every link check would pass vacuously."""
    assert len(documents()) > 10
    assert any(LINK.findall(prose(ROOT / "README.md")))


def test_the_architecture_page_lists_every_module() -> None:
    """docs/internals/architecture.md has one line per module; a new module without one fails here."""
    page = (ROOT / "docs" / "internals" / "architecture.md").read_text(encoding="utf-8")
    package = ROOT / "quickbot_segment_plugin"
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "__main__.py" and f"`{path.relative_to(package)}`" not in page
    ]
    assert missing == [], f"add a line for each to docs/internals/architecture.md: {missing}"


def test_the_python_api_page_imports_what_the_packages_export() -> None:
    """Every import shown in docs/host-integrators/python-api.md works against the installed package."""
    page = (ROOT / "docs" / "host-integrators" / "python-api.md").read_text(encoding="utf-8")
    statements = re.findall(r"^from quickbot_segment_plugin[\w.]* import (?:\([^)]*\)|[^\n]+)", page, re.MULTILINE)
    assert len(statements) >= 5
    for statement in statements:
        exec(compile(statement, "python-api.md", "exec"), {})
