"""notebooks/COURSE.md, the teacher's page: it covers every notebook, links what exists, and types no run time."""

import re
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
COURSE = NOTEBOOKS / "COURSE.md"
NUMBERED = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _anchors(markdown: str) -> set:
    """GitHub's anchors of a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, flags=re.M)}


def test_every_notebook_has_objectives_a_session_and_instructor_notes():
    text = COURSE.read_text(encoding="utf-8")
    objectives = _section(text, "## What each notebook teaches")
    schedule = _section(text, "## A five-session schedule")
    notes = _section(text, "## Instructor notes")
    sessions = re.findall(r"^\| (\d)\. ", schedule, flags=re.M)
    assert sessions == ["1", "2", "3", "4", "5"], f"the schedule has sessions {sessions}"
    for stem in NUMBERED:
        assert f"| `{stem}` |" in objectives, f"{stem}: no learning objectives in COURSE.md"
        assert f"`{stem[:2]}`" in schedule, f"{stem}: in no session of the schedule"
        assert re.search(rf"^\*\*{stem[:2]} · ", notes, flags=re.M), f"{stem}: no instructor notes"
    listed = set(re.findall(r"^\| `(\d\d_\w+)` \|", objectives, flags=re.M))
    assert listed <= set(NUMBERED), f"COURSE.md lists notebooks that do not exist: {sorted(listed - set(NUMBERED))}"


def test_links_resolve_and_run_times_are_not_typed():
    text = COURSE.read_text(encoding="utf-8")
    for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", text):
        path = NOTEBOOKS / target
        assert path.is_file(), f"COURSE.md links {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(path.read_text(encoding="utf-8")), f"COURSE.md links {target}#{anchor}: no such heading"
    typed = re.findall(r"\b\d+(?:\.\d+)?\s*(?:min|minutes)\b", text)
    assert not typed, f"COURSE.md types run times {typed}: they are read from the notebooks (README's table)"
    assert "shared/" not in text, "COURSE.md points at the maintainers' folder"
    assert "(COURSE.md)" in (NOTEBOOKS / "README.md").read_text(encoding="utf-8"), "notebooks/README.md must link it"
