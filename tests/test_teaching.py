"""Student copies of the notebooks (mmkd_helpers.teaching)."""

import json
import re
from pathlib import Path

import pytest

from mmkd_helpers.cli import main
from mmkd_helpers.teaching import CHECK_CALL, is_solution, student_copy

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NUMBERED = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def code(source, tags=(), outputs=None):
    return {"cell_type": "code", "id": source[:8], "metadata": {"tags": list(tags)}, "execution_count": 3,
            "outputs": outputs or [{"output_type": "stream", "name": "stdout", "text": ["42\n"]}], "source": source}


def markdown(source, tags=()):
    return {"cell_type": "markdown", "id": source[:8], "metadata": {"tags": list(tags)}, "source": source}


def test_a_hand_made_notebook_loses_its_solutions_and_outputs_and_keeps_one_prompt_per_exercise():
    notebook = {"metadata": {"papermill": {"duration": 1.0}}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        code("x = 1"),
        markdown("## Exercises\n\n1. Add one.\n2. Double it."),
        markdown("**Solution 1.**"),
        code("y = x + 1  # secret-one", tags=["solution"]),
        markdown("**Solution 2.** Doubling gives 4: secret-two"),
        code("z = 2 * y", tags=["solution"]),
        markdown("Why? secret-three", tags=["solution"]),
        markdown("## Summary"),
    ]}
    before = json.dumps(notebook)
    copy = student_copy(notebook)
    assert json.dumps(notebook) == before, "the instructor's notebook was changed"
    text = json.dumps(copy)
    assert not any(secret in text for secret in ("secret-one", "secret-two", "secret-three", "42"))
    sources = ["".join(c["source"]) for c in copy["cells"]]
    assert sources[0] == "x = 1" and sources[1].startswith("## Exercises") and sources[-1] == "## Summary"
    assert [s.split(":")[0] for s in sources[2:4]] == ["# Exercise 1", "# Exercise 2"]
    assert len(copy["cells"]) == 5
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in copy["cells"] if c["cell_type"] == "code")
    assert "papermill" not in copy["metadata"]


def test_exercises_without_solution_headings_are_numbered_in_order():
    notebook = {"metadata": {}, "cells": [markdown("**1.** a"), code("a", ["solution"]), markdown("**2.** b"),
                                          code("b", ["solution"])]}
    prompts = [c["source"] for c in student_copy(notebook)["cells"] if c["cell_type"] == "code"]
    assert [p.split(":")[0] for p in prompts] == ["# Exercise 1", "# Exercise 2"]


def test_is_solution_reads_tags_and_solution_headings():
    assert is_solution(code("a", ["solution"])) and is_solution(markdown("**Solution 3.** text"))
    assert not is_solution(markdown("**3.** an exercise")) and not is_solution(code("**Solution"))


@pytest.mark.parametrize("path", NUMBERED, ids=[p.stem for p in NUMBERED])
def test_the_course_notebooks_student_copies_hold_no_solution_text_or_output(path):
    """Every line of every solution cell of the instructor's notebook is gone from the copy (lines that also occur
    outside the solutions, like an import, excepted), no cell has an output, and there is a prompt per solution."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    copy = student_copy(notebook)
    kept = {line.strip() for cell in notebook["cells"] if not is_solution(cell)
            for line in "".join(cell["source"]).splitlines()}
    secret = {line.strip() for cell in notebook["cells"] if is_solution(cell)
              for line in "".join(cell["source"]).splitlines() if len(line.strip()) > 12} - kept
    copied = {line.strip() for cell in copy["cells"] for line in "".join(cell["source"]).splitlines()}
    assert secret and not secret & copied
    assert all(not c.get("outputs") for c in copy["cells"])
    statements = {int(m.group(1)) for c in notebook["cells"] if c["cell_type"] == "markdown"
                  for m in [re.match(r"^\s*\*\*(\d+)\.\*\*", "".join(c["source"]))] if m}
    with_cell = {int(m.group(2)) for c in copy["cells"] if "exercise" in c["metadata"].get("tags", [])
                 for m in CHECK_CALL.finditer("".join(c["source"]))}
    prompts = {int(m.group(1)) for c in copy["cells"] for m in [re.match(r"^# Exercise (\d+):", "".join(c["source"]))]
               if m}
    assert statements <= with_cell | prompts, f"exercises {sorted(statements - with_cell - prompts)} have no cell left"
    assert not with_cell & prompts, "an exercise with a cell of its own got a prompt too"


def test_an_exercise_with_a_checked_cell_of_its_own_gets_no_prompt():
    notebook = {"metadata": {}, "cells": [
        markdown("## Exercises"), markdown("**1.** Add one."),
        code('answer_1 = None\ncheck("03.1", answer_1)', ["exercise"]),
        markdown("**Solution 1.**"), code('answer_1 = 2  # secret\ncheck("03.1", answer_1)', ["solution"]),
        markdown("**2.** Double it."), markdown("**Solution 2.**"), code("z = 4", ["solution"])]}
    sources = ["".join(c["source"]) for c in student_copy(notebook)["cells"]]
    assert sources[2].startswith("answer_1 = None") and not any("secret" in s for s in sources)
    assert [s.split(":")[0] for s in sources if s.startswith("# Exercise")] == ["# Exercise 2"]


def test_every_answer_in_the_exercise_sections_is_marked_as_a_solution():
    """In each notebook's Exercises section, every cell is an exercise statement or marked as a solution, so that
    no answer text reaches the student copy unmarked."""
    for path in NUMBERED:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        starts = [i for i, c in enumerate(cells) if "".join(c["source"]).lstrip().startswith("## Exercises")]
        assert len(starts) == 1, f"{path.name}: one '## Exercises' section expected"
        for cell in cells[starts[0] + 1:]:
            source = "".join(cell["source"]).lstrip()
            if source.startswith("## "):
                break
            statement = cell["cell_type"] == "markdown" and source[:2] == "**" and source[2:3].isdigit()
            learners_cell = "exercise" in cell["metadata"].get("tags", [])  # e.g. where a prediction is written down
            assert statement or learners_cell or is_solution(cell), (
                f"{path.name}: unmarked cell in the exercises: {source[:60]!r}")


def test_the_command_writes_the_copies_and_refuses_to_overwrite_the_notebooks(tmp_path, capsys):
    assert main(["student-copies", str(tmp_path / "students"), "--notebooks", str(NOTEBOOKS)]) == 0
    assert sorted(p.name for p in (tmp_path / "students").iterdir()) == [p.name for p in NUMBERED]
    assert main(["student-copies", str(NOTEBOOKS), "--notebooks", str(NOTEBOOKS)]) == 2
    assert "would replace the solutions" in capsys.readouterr().err
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "01_x.ipynb").write_text("{not json")
    assert main(["student-copies", str(tmp_path / "out"), "--notebooks", str(tmp_path / "broken")]) == 2
    assert "01_x.ipynb: not a notebook" in capsys.readouterr().err and not (tmp_path / "out" / "01_x.ipynb").exists()


def test_show_source_shows_the_package_code_and_where_it_lives():
    from mmkd_helpers.teaching import show_source

    whole = show_source(student_copy).data
    assert whole.startswith("`mmkd_helpers/teaching.py`, line ") and "def student_copy(" in whole
    part = show_source(student_copy, start="copied = copy.deepcopy", stop="cells, number").data
    assert "def student_copy" not in part and part.rstrip("`\n").endswith("last_heading = [], 0, None")
    with pytest.raises(ValueError, match="no line contains"):
        show_source(student_copy, start="no such line")
