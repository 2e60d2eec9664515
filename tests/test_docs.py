"""The README and docs/: every relative link names a file that exists and, with a #anchor, a heading of
that file (slugged as GitHub does: lowercase; what is not a letter, digit, space, hyphen or underscore
dropped; spaces to hyphens; a repeated heading gets -1, -2, ...)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def slugs(path: Path) -> set[str]:
    out, seen, fence = set(), Counter(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))  # a link in a heading: its text
        s = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        out.add(s if not seen[s] else f"{s}-{seen[s]}")
        seen[s] += 1
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)  # none inside code
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"^[a-z]+:", t)]


def test_slugs_follow_githubs_rule(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Pruned initialisation (`student.init=pruned`)\n## A, b & c\n## A, b & c\n```\n# not\n```\n")
    assert slugs(page) == {"pruned-initialisation-studentinitpruned", "a-b--c", "a-b--c-1"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in slugs(dest)):
            broken.append(f"{target}: no heading #{anchor}")
    assert not broken, broken


def test_the_readme_leads_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    heads = [line for line in readme.splitlines()[:150] if line.startswith("## ")]
    assert heads[:6] == ["## Two commands", "## Your own data, your own teacher",
                         "## Where every number lives, and how to change it", "## The run directory and resume",
                         "## When it fails", "## Contents"]
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md") if t.startswith("docs/")}
    assert set(PAGES[1:]) <= linked, "a docs page the README's contents do not link"


def test_every_test_the_faults_table_names_exists():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("### What happens when things go wrong", 1)[1].split("\n\n", 2)[1]
    named = []
    for row in table.splitlines()[2:]:
        current = None
        for ref in re.findall(r"`([^`]+)`", row.rsplit("|", 2)[-2]):
            path, _, name = ref.partition("::")
            current = path or current
            named.append((current, name))
    assert len(named) >= 9
    for path, name in named:
        source = (REPO / path).read_text()  # a whole file named: it exists
        assert not name or re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{path}::{name} is not a test there"
