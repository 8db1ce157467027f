"""References in code and docs point at things that exist inside the repository.

- No file cites design or Graph notes kept outside the repository.
- Every citation of a section, ``docs/design.md "State"`` or ``docs/graph-notes.md
  "Throttling", "Tokens"`` (inside the docs also ``graph-notes.md "..."``), names a heading
  of that file.
- Relative Markdown links and the repository paths the docs name exist.
- Dotted names in double backquotes (``shared.ports.IdentityPlatform``, ``ports.QueueSender``)
  name something defined in that module (or exported by its ``__all__``).
- The README's event example carries what ``shared.events`` emits.
"""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest

from shared.events import event_source, mail_event
from shared.models import Account

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIPPED_DIRS = {".git", ".venv", ".venv-infra", "node_modules", ".devstack", "__pycache__", ".mypy_cache", ".ruff_cache"}
TEXT_SUFFIXES = {".py", ".md", ".bicep", ".json", ".toml", ".yaml", ".yml", ".txt", ".cfg", ".ini", ".example"}
TEXT_NAMES = {"Makefile", "run", ".funcignore", ".gitignore"}

# Notes kept outside the repository, which no file may cite (spelled so that this file
# does not cite them itself).
OUTSIDE = re.compile(r"DESIGN\.md|GRAPH[_]NOTES|\.\./shared\b|/work[/]shared\b")
# A citation: the file, then one or more quoted headings separated by commas; a line break
# (and a comment's ``#``) may come between them.
CITATION = re.compile(r'(?<![\w/.-])((?:docs/)?(?:design|graph-notes)\.md)((?:[\s#]*,?[\s#]*"[^"\n]+")+)')
QUOTED = re.compile(r'"([^"\n]+)"')
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"(?<![\w/.-])((?:shared|functions|devstack|tests|bench|infra)/[\w/.-]*\w)")
DOTTED = re.compile(r"``((?:shared|devstack|functions|[a-z_]+)(?:\.[A-Za-z_]\w*)+)``")


def _text_files() -> list[Path]:
    found = []
    for path in sorted(ROOT.rglob("*")):
        if any(part in SKIPPED_DIRS for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and (path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES):
            found.append(path)
    return found


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in doc.read_text().splitlines() if re.match(r"#{2,4} ", line)}


def _citations(text: str) -> list[tuple[str, str]]:
    cited = []
    for match in CITATION.finditer(text):
        name = match.group(1).removeprefix("docs/")
        cited.extend((name, heading) for heading in QUOTED.findall(match.group(2)))
    return cited


def test_no_file_cites_notes_kept_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in _text_files()
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_both_docs_exist_and_the_readme_links_them() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("design.md", "graph-notes.md"):
        assert (DOCS / name).is_file()
        assert f"](docs/{name})" in readme


def test_every_cited_section_is_a_heading_of_its_doc() -> None:
    headings = {name: _headings(DOCS / name) for name in ("design.md", "graph-notes.md")}
    cited: list[tuple[str, str, str]] = []
    for path in _text_files():
        text = path.read_text(errors="replace")
        if path.parent != DOCS:  # outside docs/ only the full path counts as a citation
            text = re.sub(r"(?<![\w/])(design|graph-notes)\.md", r"_\1.md", text)
        cited.extend((str(path.relative_to(ROOT)), name, heading) for name, heading in _citations(text))
    missing = [c for c in cited if c[2] not in headings[c[1]]]

    assert len(cited) >= 30  # the code cites the docs: a scanner that finds nothing is broken
    assert missing == []


def test_the_citation_scanner_reads_lists_and_line_breaks() -> None:
    text = 'x (docs/graph-notes.md "Change notifications", "Lifecycle notifications") and\n# (docs/design.md\n# "State")'
    assert _citations(text) == [
        ("graph-notes.md", "Change notifications"),
        ("graph-notes.md", "Lifecycle notifications"),
        ("design.md", "State"),
    ]


def test_links_and_paths_in_the_docs_and_the_readme_exist() -> None:
    broken = []
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = doc.read_text()
        for target in MARKDOWN_LINK.findall(text):
            if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
                if not (doc.parent / target.split("#")[0]).exists():
                    broken.append(f"{doc.name}: link {target}")
        for path in REPO_PATH.findall(text):
            if not (ROOT / path).exists():
                broken.append(f"{doc.name}: path {path}")
    assert broken == []


def _shared_modules() -> set[str]:
    return {p.stem for p in (ROOT / "shared").glob("*.py")} | {p.stem for p in (ROOT / "shared/adapters").glob("*.py")}


def _resolve(dotted: str, *, bare: bool = True) -> str | None:
    """None when ``dotted`` names something defined where it says, else why not. With
    ``bare``, a name starting with a module of ``shared`` (``ports.QueueSender``) means that
    module (the core's own docstrings write them so)."""
    parts = dotted.split(".")
    if parts[-1] in ("py", "md", "json", "bicep", "txt"):
        return None  # a file name
    if parts[0] not in ("shared", "devstack", "functions"):
        if not bare or parts[0] not in _shared_modules():
            return None  # not one of ours (``requests.Session``, ``host.json``)
        in_core = (ROOT / "shared" / f"{parts[0]}.py").exists()
        prefix = "shared." if in_core else "shared.adapters."
        parts = (prefix + dotted).split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        owner: object = module
        for attribute in parts[cut:]:
            if not hasattr(owner, attribute):
                return f"{name} has no {'.'.join(parts[cut:])}"
            value = getattr(owner, attribute)
            if owner is module and (inspect.isclass(value) or inspect.isfunction(value)):
                exported = getattr(module, "__all__", ())
                if value.__module__ != name and attribute not in exported:
                    return f"{attribute} lives in {value.__module__}, not {name}"
            owner = value
        return None
    return f"no module {dotted}"


def test_dotted_names_in_docstrings_name_where_things_live() -> None:
    wrong = []
    for path in _text_files():
        if path.suffix not in (".py", ".md"):
            continue
        bare = path.relative_to(ROOT).parts[0] in ("shared", "functions", "docs")
        for dotted in DOTTED.findall(path.read_text(errors="replace")):
            why = _resolve(dotted, bare=bare)
            if why is not None:
                wrong.append(f"{path.relative_to(ROOT)}: ``{dotted}``: {why}")
    assert wrong == []


@pytest.mark.parametrize("dotted", ["tokens.IdentityPlatform", "shared.tokens.IdentityPlatform"])
def test_a_name_cited_in_a_module_it_does_not_live_in_is_found(dotted: str) -> None:
    assert _resolve(dotted) is not None
    assert _resolve("shared.ports.IdentityPlatform") is None


def test_the_readme_event_example_is_what_the_connector_emits() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```json\n(\{\n  \"specversion\".*?\n\})\n```", readme, re.S)
    assert block is not None
    example = json.loads(block.group(1))
    account = Account(account_id="{accountId}", tenant_id="t", user_id="u", user_principal_name="p")
    emitted = mail_event(
        account, {"id": "{messageId}", "subject": "s"}, "created", folder="inbox",
        now=dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC),
    )

    assert example["source"] == event_source("{accountId}", "inbox") == emitted["source"]
    assert example["subject"] == emitted["subject"] and example["type"] == emitted["type"]
    assert set(example) == set(emitted)
    assert set(example["data"]) <= set(emitted["data"])
