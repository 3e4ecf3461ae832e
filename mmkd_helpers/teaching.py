"""For teachers: student copies of the notebooks.

A notebook's worked solutions are its cells tagged ``solution`` (code and markdown) and the markdown cells that
open with "**Solution". :func:`student_copy` removes them and clears every output, so that a learner can try an
exercise before seeing an answer and the copy still runs top to bottom with the exercises unsolved. The cells
tagged ``exercise`` stay: each holds the learner's answer (``None`` at first) and its self-check
(:func:`mmkd_helpers.exercises.check`). An exercise without such a cell gets a prompt cell where its solution's
code was. ``mmkd student-copies OUT`` writes the copies of a folder of notebooks.
"""

import copy
import json
import re
from pathlib import Path

from .fileio import atomic_path

SOLUTION_TAG = "solution"
SOLUTION_HEADING = re.compile(r"^\s*\*\*Solution\b")
EXERCISE_NUMBER = re.compile(r"^\s*\*\*Solution\s+(\d+)")
EXERCISE_TAG = "exercise"
CHECK_CALL = re.compile(r"""check\(\s*["'](\d{2})\.(\d+)["']""")
PROMPT = "# Exercise {number}: your answer here (the worked solution is in the instructor's copy)\n"


def is_solution(cell: dict) -> bool:
    """A cell the student copy removes: tagged ``solution``, or markdown opening with "**Solution"."""
    if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
        return True
    return cell["cell_type"] == "markdown" and bool(SOLUTION_HEADING.match(_source(cell)))


def student_copy(notebook: dict) -> dict:
    """The learner's version of a notebook (nbformat 4 as a dict): solutions out, one prompt cell per solution's
    code, every output and execution count cleared, execution metadata dropped. ``notebook`` is not changed."""
    if not isinstance(notebook, dict) or "cells" not in notebook:
        raise ValueError("student_copy needs a notebook (a dict with 'cells', nbformat 4)")
    copied = copy.deepcopy(notebook)
    copied.get("metadata", {}).pop("papermill", None)
    with_cell = {int(m.group(2)) for c in copied["cells"] if EXERCISE_TAG in c.get("metadata", {}).get("tags", [])
                 for m in CHECK_CALL.finditer(_source(c))}
    cells, number, last_heading = [], 0, None
    for cell in copied["cells"]:
        if is_solution(cell):
            match = EXERCISE_NUMBER.match(_source(cell)) if cell["cell_type"] == "markdown" else None
            if match:
                last_heading = int(match.group(1))
            if cell["cell_type"] == "code":
                number = last_heading if last_heading is not None and last_heading > number else number + 1
                last_heading = None
                if number not in with_cell and (not cells or not _is_prompt(cells[-1], number)):
                    cells.append(_prompt(cell, number))
            continue
        cells.append(_cleared(cell))
    copied["cells"] = cells
    return copied


def write_student_copies(notebooks_dir, out_dir) -> list:
    """Student copies of every ``NN_*.ipynb`` in ``notebooks_dir``, written atomically to ``out_dir`` under the same
    names; returns the written paths."""
    notebooks_dir, out_dir = Path(notebooks_dir), Path(out_dir)
    sources = sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise ValueError(f"{notebooks_dir}: no numbered notebooks (NN_name.ipynb) here")
    if out_dir.resolve() == notebooks_dir.resolve():
        raise ValueError(f"{out_dir}: is the notebooks' own folder; the copies would replace the solutions")
    written = []
    for source in sources:
        try:
            notebook = json.loads(source.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not a notebook ({exc.msg} at line {exc.lineno})") from None
        with atomic_path(out_dir / source.name) as tmp:
            tmp.write_text(json.dumps(student_copy(notebook), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(out_dir / source.name)
    return written


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _cleared(cell: dict) -> dict:
    metadata = {k: v for k, v in cell.get("metadata", {}).items() if k not in ("execution", "papermill")}
    cell = {**cell, "metadata": metadata}
    if cell["cell_type"] == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


def _is_prompt(cell: dict, number: int) -> bool:
    return cell["cell_type"] == "code" and _source(cell) == PROMPT.format(number=number)


def _prompt(cell: dict, number: int) -> dict:
    tags = [t for t in cell.get("metadata", {}).get("tags", []) if t != SOLUTION_TAG]
    return {"cell_type": "code", "id": cell.get("id", f"exercise-{number}"), "metadata": {"tags": tags} if tags else {},
            "execution_count": None, "outputs": [], "source": PROMPT.format(number=number)}


def show_source(obj, start: str | None = None, stop: str | None = None):
    """Display the source of a package function or class beside its equation, d2l style: a Markdown code block
    headed by where it lives (``mmkd_helpers/losses/kd.py``, line n). ``start``/``stop``: show only the lines from
    the first containing ``start`` to the first after it containing ``stop`` (both included), e.g. one method's
    ``loss``. Returns the IPython ``Markdown`` object (displayed when it is the cell's last expression)."""
    import inspect

    from IPython.display import Markdown

    lines, first = inspect.getsourcelines(obj)
    if start is not None:
        begin = next((i for i, line in enumerate(lines) if start in line), None)
        if begin is None:
            raise ValueError(f"{obj.__qualname__}: no line contains {start!r}")
        end = next((i for i, line in enumerate(lines[begin + 1:], begin + 1) if stop and stop in line), len(lines) - 1)
        lines, first = lines[begin:end + 1], first + begin
    module = inspect.getmodule(obj).__name__.replace(".", "/") + ".py"
    body = "".join(lines)
    return Markdown(f"`{module}`, line {first}:\n\n```python\n{body}```")
