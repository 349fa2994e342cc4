"""The README stays a short page for a newcomer, docs/README.md indexes every page, and every relative link in the
README and in docs/ resolves: to a file or folder of the repository and, with an `#anchor`, to a heading of the
page it names (GitHub's heading ids)."""

import re
from pathlib import Path

import pytest

from tests.helpers import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", flags=re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", flags=re.S)
INLINE_LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^()\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", flags=re.M)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$", flags=re.M)


def prose(text: str) -> str:
    """The text with fenced code blocks blanked (their lines kept, so nothing in them is read as a link or a
    heading)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def links(text: str) -> list[str]:
    """Every link target of a Markdown page: inline links and images, and reference definitions."""
    text = CODE_SPAN.sub("", prose(text))
    return [m.group(2) for m in INLINE_LINK.finditer(text)] + REFERENCE.findall(text)


def slug(heading: str) -> str:
    """GitHub's id for a heading: its text as rendered, lower case, without punctuation, spaces as hyphens."""
    text = INLINE_LINK.sub(lambda m: m.group(1), heading).replace("`", "")
    text = re.sub(r"[*~]|(?<!\w)_+|_+(?!\w)", "", text)  # emphasis marks; underscores inside words stay
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The ids of a page's headings; a repeated one gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for heading in HEADING.findall(prose(text)):
        base = candidate = slug(heading)
        n = 0
        while candidate in found:
            n += 1
            candidate = f"{base}-{n}"
        found.add(candidate)
    return found


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """The relative links of `page` that name no file or folder under `root`, or no heading of the page."""
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I):  # https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(root.resolve()):
            broken.append(f"{target}: outside the repository")
        elif not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def test_the_readme_is_at_most_200_lines():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert not broken_links(page)


def test_the_docs_index_links_every_page_and_the_readme_links_the_index():
    index = {(DOCS / t.partition("#")[0]).resolve() for t in links((DOCS / "README.md").read_text(encoding="utf-8"))}
    pages = {p.resolve() for p in DOCS.rglob("*.md")} - {(DOCS / "README.md").resolve()}
    assert not sorted(str(p.relative_to(ROOT)) for p in pages - index)
    assert "docs/README.md" in links((ROOT / "README.md").read_text(encoding="utf-8"))


def test_each_readme_section_but_install_ends_with_a_link_to_a_page_in_docs():
    sections = re.split(r"^## ", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.M)[1:]
    for section in (s for s in sections if not s.startswith("Install\n")):
        last = section.strip().splitlines()[-1]
        assert re.search(r"\]\(docs/[^)]+\)\.?$", last), f"## {section.splitlines()[0]} ends with {last!r}"


def test_slugs_are_githubs():
    assert slug("Captioning on the CPU: int8, bf16, many processes") == "captioning-on-the-cpu-int8-bf16-many-processes"
    assert slug("COCO captions: pretrained CLIP ViT-B/16 + GPT-2 small (`configs/coco_vit_gpt2.yaml`)") == (
        "coco-captions-pretrained-clip-vit-b16--gpt-2-small-configscoco_vit_gpt2yaml"
    )
    assert slug("`make demo`") == "make-demo"
    assert slug("Measured: captions the package's tokenizer has **never** seen") == (
        "measured-captions-the-packages-tokenizer-has-never-seen"
    )
    assert anchors("# A\n## A\n```\n# A\n```\n## A\n") == {"a", "a-1", "a-2"}


def test_a_broken_link_or_anchor_is_found_and_code_is_not_read(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "other.md").write_text("# Other page\n", encoding="utf-8")
    (tmp_path / "outside.md").write_text("# Outside\n", encoding="utf-8")
    page = repo / "page.md"
    page.write_text(
        "# Title\n[ok](other.md) [ok](other.md#other-page) [ok](#title) [web](https://example.com/x)\n"
        "[gone](missing.md) [no heading](other.md#nothing) [no heading here](#nothing)\n"
        "`[in code](missing2.md)`\n```\n[in a block](missing3.md)\n```\n[up](../outside.md)\n",
        encoding="utf-8",
    )
    assert broken_links(page, root=repo) == [
        "missing.md: no such file",
        "other.md#nothing: no heading #nothing in other.md",
        "#nothing: no heading #nothing in page.md",
        "../outside.md: outside the repository",
    ]
