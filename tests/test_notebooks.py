"""Every numbered notebook (``notebooks/NN_*.ipynb``) runs top to bottom on a fresh kernel, on its fast path.

* Static checks (no kernel, fast): one ``parameters`` cell defining ``FAST`` (default read from
  ``$MMKD_FAST``) and ``DATA_DIR``; execution counts 1..n in order (committed from a clean run);
  no committed error output and no absolute machine path in outputs or metadata.
* papermill with ``FAST=True`` on the course's phantom data, then again on the real BraTS sample beside
  the repository (skipped when absent): no error, no machine path in the outputs, nothing left behind
  in ``notebooks/``, and within a time budget.
* nbval (``--nbval-lax``) with ``MMKD_FAST=1``: the cells tagged ``nbval-check-output`` print what the
  committed notebook shows (modulo ``tests/nbval_sanitize.cfg``).

The kernels get a temporary ``MMKD_DATA_DIR`` (phantoms are generated there) and no ``MPLBACKEND``:
CI exports ``MPLBACKEND=Agg``, which would stop the kernels from showing figures inline.
"""

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REAL_BRATS, skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
AVMNIST_NOTEBOOKS = [p for p in NOTEBOOKS if p.name.startswith("10_")]
"""Notebooks on AV-MNIST rather than BraTS: no phantom of their data exists, so they run on the real MNIST + FSDD
beside the repository (skipped when absent, failed in CI), and once without any data (one clear message)."""
BRATS_NOTEBOOKS = [p for p in NOTEBOOKS if p not in AVMNIST_NOTEBOOKS]
SANITIZE = Path(__file__).with_name("nbval_sanitize.cfg")
CELL_TIMEOUT = 300  # seconds per cell: papermill's default is "forever"
FAST_BUDGET = 120  # seconds for one whole notebook on its fast path (the course promises < 1 min)
KERNEL = "python3"

ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])(?:/(?:root|home|tmp|work|Users)(?![\w.-])|[A-Za-z]:\\+Users\b)")
"""An absolute path of this machine (or a learner's): outputs must not show one (privacy, noise in diffs)."""
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
BINARY_MIME = ("image/", "application/vnd.jupyter.widget")

notebook_params = pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
brats_notebook_params = pytest.mark.parametrize("notebook", BRATS_NOTEBOOKS, ids=[p.name for p in BRATS_NOTEBOOKS])
avmnist_notebook_params = pytest.mark.parametrize("notebook", AVMNIST_NOTEBOOKS, ids=[p.name for p in AVMNIST_NOTEBOOKS])


def _read(path: Path):
    import nbformat

    return nbformat.read(path, as_version=4)


def _tags(cell) -> set:
    return set(cell.get("metadata", {}).get("tags", []))


def _output_texts(output) -> list:
    """The text an output shows (images and widget models are not text and are skipped)."""
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    if output.get("output_type") == "error":
        return [output.get("ename", ""), output.get("evalue", ""), *output.get("traceback", [])]
    texts = []
    for mime, value in output.get("data", {}).items():
        if not mime.startswith(BINARY_MIME):
            texts.append(value if isinstance(value, str) else json.dumps(value))
    return texts


def _problems(nb, metadata: bool = True) -> list:
    """Error outputs and absolute machine paths in the outputs (and the notebook metadata) of ``nb``.

    The metadata of a notebook that papermill wrote names its input and output paths: not checked.
    """
    problems = []
    match = ABSOLUTE_PATH.search(json.dumps(nb.get("metadata", {}))) if metadata else None
    if match:
        problems.append(f"notebook metadata shows the machine path {match.group(0)!r} (committed from papermill?)")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"cell {index} (In [{cell.get('execution_count')}])"
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{where}: error output {output.get('ename')}: {output.get('evalue')}")
            for text in _output_texts(output):
                match = ABSOLUTE_PATH.search(text)
                if match:
                    line = next(l for l in text.splitlines() if match.group(0) in l)  # noqa: E741
                    problems.append(f"{where}: output shows the machine path {match.group(0)!r}: {line.strip()[:200]!r}")
    return problems


def _assigned_names(source: str) -> set:
    names = set()
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _files(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


@pytest.fixture
def kernel_env(tmp_path, monkeypatch) -> Path:
    """Environment of the kernels papermill starts: a fresh data folder, no Agg backend, no MMKD_FAST,
    no user-level kernelspec."""
    data_dir = tmp_path / "mmkd-data"
    data_dir.mkdir()
    monkeypatch.setenv("MMKD_DATA_DIR", str(data_dir))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("MMKD_FAST", raising=False)  # the papermill tests choose the fast path by parameter
    # no user-level kernelspecs (~/.local/share/jupyter/kernels): "python3" is this environment's Python
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    return data_dir


def _run_papermill(notebook: Path, out_dir: Path, parameters: dict, budget: float = FAST_BUDGET) -> float:
    import papermill

    before = _files(NOTEBOOK_DIR)
    out = out_dir / notebook.name
    start = time.perf_counter()
    failure = None
    try:
        papermill.execute_notebook(str(notebook), str(out), parameters=parameters, kernel_name=KERNEL,
                                   cwd=str(NOTEBOOK_DIR), execution_timeout=CELL_TIMEOUT, progress_bar=False,
                                   request_save_on_cell_execute=False)
    except papermill.PapermillExecutionError as error:
        trace = ANSI.sub("", "\n".join(error.traceback))
        failure = (f"{notebook.name} with {parameters}: cell In [{error.exec_count}] raised {error.ename}: "
                   f"{error.evalue}\n--- cell source ---\n{error.source}\n--- traceback ---\n{trace}")
    if failure:
        pytest.fail(failure, pytrace=False)
    elapsed = time.perf_counter() - start
    nb = _read(out)
    problems = _problems(nb, metadata=False)
    assert not problems, f"{notebook.name} with {parameters}:\n" + "\n".join(problems)
    assert any("injected-parameters" in _tags(c) for c in nb.cells), "papermill injected no parameters"
    left = sorted(str(p) for p in _files(NOTEBOOK_DIR) - before)
    assert not left, f"{notebook.name} wrote into notebooks/ {left}: write under MMKD_DATA_DIR or a temporary folder"
    assert elapsed < budget, f"{notebook.name} with {parameters} took {elapsed:.0f} s (budget {budget:.0f} s)"
    return elapsed


# --- static checks: the committed notebooks ------------------------------------------------------------

@notebook_params
def test_notebook_has_one_parameters_cell_with_fast_and_data_dir(notebook):
    nb = _read(notebook)
    cells = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(cells) == 1, f"{notebook.name}: {len(cells)} cells tagged 'parameters', expected exactly 1"
    (cell,) = cells
    assert cell.cell_type == "code"
    names = _assigned_names(cell.source)
    assert {"FAST", "DATA_DIR"} <= names, f"{notebook.name}: the parameters cell assigns {sorted(names)}, needs FAST and DATA_DIR"
    assert "MMKD_FAST" in cell.source, f"{notebook.name}: FAST's default must read $MMKD_FAST (nbval and the browser test set it)"


@notebook_params
def test_notebook_is_committed_from_a_clean_top_to_bottom_run(notebook):
    nb = _read(notebook)
    counts = [c.get("execution_count") for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{notebook.name}: execution counts {counts}; commit it after Restart Kernel and Run All Cells")


@notebook_params
def test_committed_outputs_show_no_error_and_no_machine_path(notebook):
    problems = _problems(_read(notebook))
    assert not problems, f"{notebook.name}:\n" + "\n".join(problems)


@notebook_params
def test_checked_cells_show_no_widget(notebook):
    for index, cell in enumerate(_read(notebook).cells):
        if "nbval-check-output" in _tags(cell):
            mimes = {m for o in cell.get("outputs", []) for m in o.get("data", {})}
            assert not any(m.startswith("application/vnd.jupyter.widget") for m in mimes), (
                f"{notebook.name} cell {index}: a widget's output cannot be compared; tag it nbval-ignore-output")


# --- execution -------------------------------------------------------------------------------------------

@brats_notebook_params
def test_notebook_runs_fast_on_phantom_data(notebook, tmp_path, kernel_env):
    elapsed = _run_papermill(notebook, tmp_path, {"FAST": True})
    print(f"{notebook.name}: {elapsed:.1f} s")


DEFAULT_RUNS = ("01_data_loading", "07_pmix_alignment", "08_pmix_students", "09_methods_side_by_side")
"""Heavy tier: notebooks run at their default parameters, as a learner runs them (the shipped checkpoints, the
course's data): the quickest four, about five minutes together; the others take 3-8 min each and are re-executed,
with their outputs committed, whenever what they load changes."""
DEFAULT_BUDGET = 600  # seconds for one notebook at its defaults (README: "a few minutes" each)


@pytest.mark.heavy
@pytest.mark.timeout(DEFAULT_BUDGET + 120)
@pytest.mark.parametrize("notebook", [NOTEBOOK_DIR / f"{name}.ipynb" for name in DEFAULT_RUNS], ids=DEFAULT_RUNS)
def test_notebook_runs_at_its_default_parameters(notebook, tmp_path, kernel_env):
    elapsed = _run_papermill(notebook, tmp_path, {"FAST": False}, budget=DEFAULT_BUDGET)
    print(f"{notebook.name} at its defaults: {elapsed:.1f} s")


@pytest.mark.heavy
@notebook_params
def test_the_student_copy_runs_with_its_exercises_unsolved(notebook, tmp_path, kernel_env, request, monkeypatch):
    """The learner's copy (mmkd_helpers.teaching.student_copy: solutions out, prompts in) runs top to bottom on its
    fast path: no later cell needs what a solution defined."""
    from mmkd_helpers.teaching import student_copy

    if notebook in AVMNIST_NOTEBOOKS:
        monkeypatch.setenv("MMKD_DATA_DIR", str(request.getfixturevalue("avmnist_data_root")))

    copy = tmp_path / "student" / notebook.name
    copy.parent.mkdir()
    copy.write_text(json.dumps(student_copy(json.loads(notebook.read_text(encoding="utf-8")))), encoding="utf-8")
    elapsed = _run_papermill(copy, tmp_path, {"FAST": True})
    print(f"student copy of {notebook.name}: {elapsed:.1f} s")


@pytest.fixture(scope="session")
def real_data_cache(tmp_path_factory) -> Path:
    """One data folder for every notebook's real-data run: the preprocessed cases are cached once."""
    return tmp_path_factory.mktemp("mmkd-real-data")


@brats_notebook_params
def test_notebook_runs_fast_on_real_brats(notebook, tmp_path, kernel_env, real_data_cache, monkeypatch):
    if not REAL_BRATS.is_dir() or not any(REAL_BRATS.iterdir()):
        skip_or_fail_in_ci(f"real BraTS sample not available at {REAL_BRATS}")
    monkeypatch.setenv("MMKD_DATA_DIR", str(real_data_cache))
    elapsed = _run_papermill(notebook, tmp_path, {"FAST": True, "DATA_DIR": str(REAL_BRATS)})
    print(f"{notebook.name} on real BraTS: {elapsed:.1f} s")


def _run_nbval(notebooks, data_dir: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTEST_ADDOPTS")}
    env.update(MMKD_FAST="1", MMKD_DATA_DIR=str(data_dir))
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
               "--nbval-cell-timeout", str(CELL_TIMEOUT), "--nbval-sanitize-with", str(SANITIZE),
               "-q", "-rfE", *(str(p.relative_to(ROOT)) for p in notebooks)]
    before = _files(NOTEBOOK_DIR)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=CELL_TIMEOUT * max(2, len(notebooks)))
    output = ANSI.sub("", result.stdout + result.stderr)
    assert result.returncode == 0, f"nbval failed ({' '.join(command[2:])}), exit {result.returncode}:\n{output[-20000:]}"
    assert re.search(r"\b\d+ passed\b", output), output[-5000:]
    left = sorted(str(p) for p in _files(NOTEBOOK_DIR) - before)
    assert not left, f"the notebooks wrote into notebooks/ {left}: write under MMKD_DATA_DIR or a temporary folder"


@pytest.mark.timeout(CELL_TIMEOUT * max(2, len(BRATS_NOTEBOOKS)) + 60)
def test_nbval_checked_outputs_match_the_committed_ones(tmp_path):
    assert BRATS_NOTEBOOKS, "no numbered notebooks (notebooks/NN_*.ipynb)"
    _run_nbval(BRATS_NOTEBOOKS, tmp_path / "mmkd-data")


# --- AV-MNIST notebooks: the real MNIST + FSDD, or no data at all ----------------------------------------------

@avmnist_notebook_params
def test_avmnist_notebook_runs_fast_on_real_data(notebook, tmp_path, kernel_env, avmnist_data_root, monkeypatch):
    monkeypatch.setenv("MMKD_DATA_DIR", str(avmnist_data_root))
    elapsed = _run_papermill(notebook, tmp_path, {"FAST": True})
    print(f"{notebook.name} on AV-MNIST: {elapsed:.1f} s")


@avmnist_notebook_params
def test_avmnist_notebook_without_data_stops_with_the_build_command(notebook, tmp_path, kernel_env):
    """No AV-MNIST folder: the first code cell that reads data stops with one line naming the command that builds
    it (IPython shows it without a traceback), and nothing after it runs."""
    import papermill

    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(str(notebook), str(tmp_path / notebook.name), parameters={"FAST": True},
                                   kernel_name=KERNEL, cwd=str(NOTEBOOK_DIR), execution_timeout=CELL_TIMEOUT,
                                   progress_bar=False, request_save_on_cell_execute=False)
    assert error.value.ename == "AVMNISTNotFound"
    assert "python -m data_download avmnist --build" in error.value.evalue
    trace = ANSI.sub("", "\n".join(error.value.traceback))
    assert len(trace.strip().splitlines()) == 1, trace


@pytest.mark.timeout(CELL_TIMEOUT * 2 + 60)
def test_nbval_checked_outputs_match_the_committed_ones_on_avmnist(avmnist_data_root):
    _run_nbval(AVMNIST_NOTEBOOKS, avmnist_data_root)


def test_the_run_time_table_is_read_from_the_notebooks_metadata():
    """notebooks/README.md's run times are those papermill recorded in each committed notebook, not typed."""
    table = (NOTEBOOK_DIR / "README.md").read_text(encoding="utf-8").split("## Measured run times", 1)[1]
    rows = dict(re.findall(r"^\| `(\d\d_\w+)` \| ([\d.]+) min \|", table, flags=re.M))
    assert sorted(rows) == [p.stem for p in NOTEBOOKS], "one row per numbered notebook"
    for notebook in NOTEBOOKS:
        duration = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["papermill"]["duration"]
        assert rows[notebook.stem] == f"{duration / 60:.1f}", (notebook.name, rows[notebook.stem], duration)


NUMBER_WORDS = {"a": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10}


def test_each_notebooks_stated_run_time_agrees_with_its_measured_one():
    """The header's "**Run time.** About N minutes" is within half (or 1.5 min) of the committed run's duration."""
    for notebook in NOTEBOOKS:
        nb = _read(notebook)
        header = "\n".join(c.source for c in nb.cells[:4] if c.cell_type == "markdown")
        match = re.search(r"\*\*Run time\.\*\*\s+(?:About|about|Under|under)\s+(\d+(?:\.\d+)?|[a-z]+)\s+minutes?\b", header)
        assert match, f"{notebook.name}: no '**Run time.** About N minutes' in its header"
        stated = float(NUMBER_WORDS.get(match.group(1), match.group(1)) if not match.group(1)[0].isdigit()
                       else match.group(1))
        measured = nb.metadata["papermill"]["duration"] / 60
        assert abs(stated - measured) <= max(1.5, 0.5 * measured), (
            f"{notebook.name}: the header says about {stated:g} min, the committed run took {measured:.1f} min")


def test_absolute_path_pattern():
    """The check above can fail: it finds machine paths, and not look-alikes."""
    for text in ("saved to /tmp/x.png", "/home/ann/data", "'/root/.cache/mmkd'", "at /work/main", "C:\\Users\\ann",
                 "/Users/ann/data", "cwd=/tmp"):
        assert ABSOLUTE_PATH.search(text), text
    for text in ("network/workers", "a/tmp/b", "/temporary", "runs/baseline/home", "1/home", "~/work"):
        assert not ABSOLUTE_PATH.search(text), text


SIDE_BY_SIDE = NOTEBOOK_DIR / "09_methods_side_by_side.ipynb"


def test_side_by_side_has_three_seeds_of_every_method_and_the_papers_numbers_beside_ours():
    """Notebook 09 (the capstone) reads every method over three training seeds (the shipped set has them; a method
    with fewer would be marked indicative), cites the papers' numbers as theirs, and corrects for many tests."""
    nb = _read(SIDE_BY_SIDE)
    text = "\n".join(t for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) for t in _output_texts(o))
    sources = "\n".join(c.source for c in nb.cells)
    assert "every method has its seeds" in text and "seed, indicative" not in text, (
        "09's committed run has a method with fewer than three seeds: ship its seeds and re-execute 09")
    assert "Mind the Gap (KD-Net, P*_mix)" in text
    assert "paper: LCKD-m" in text and "paper: MetaKD" in text and "Holm" in sources
    assert nb.metadata.get("papermill", {}).get("input_path") == SIDE_BY_SIDE.name
