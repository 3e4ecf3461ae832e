"""The install story: pyproject and environment.yml agree, CI runs the README's commands, imports are cheap."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(r): r for r in extra})
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {}
    for item in env["dependencies"]:
        if isinstance(item, str) and _name(item) not in ("python", "pip"):
            conda[CONDA_NAMES.get(_name(item), _name(item))] = item
    assert set(conda) == set(wanted), f"only in pyproject: {set(wanted) - set(conda)}; only in environment.yml: {set(conda) - set(wanted)}"
    for name, requirement in wanted.items():  # the same lower bounds
        assert requirement.replace(" ", "").split(name, 1)[-1] in conda[name].replace(" ", ""), (name, requirement, conda[name])


README_BLOCKS = ("README browser", "README install", "README test", "README heavy")
CI_PROLOGUE = ("set", "cd", "export")  # shell options, the clone's root, environment variables: no command of its own


def _commands(lines) -> list:
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _block(text: str, marker: str) -> list:
    blocks = re.findall(rf"^# BEGIN {marker}\n(.*?)^# END {marker}$", text, re.S | re.M)
    assert len(blocks) == 1, f"{len(blocks)} '{marker}' blocks, expected one"
    return _commands(blocks[0].splitlines())


def test_ci_runs_the_readme_commands_word_for_word():
    """Each block CI runs is the README's block of the same name, line for line, in both directions, and
    outside those blocks CI only prepares its shell: it installs and tests with the README's commands alone."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in README_BLOCKS:
        assert _block(ci, marker) == _block(readme, marker), f"'{marker}': .ci/run and README.md differ"
        assert _block(ci, marker), f"'{marker}' is empty"
    outside = re.sub(r"^# BEGIN (README \w+)\n.*?^# END \1$", "", ci, flags=re.S | re.M)
    extra = [line for line in _commands(outside.splitlines()) if line.split()[0] not in CI_PROLOGUE]
    assert not extra, f".ci/run runs commands that are in no README block: {extra}"
    ci_order = [ci.index(f"# BEGIN README {m}") for m in ("install", "test", "heavy")]
    assert ci_order == sorted(ci_order), ".ci/run must install, then run the quick tier, then the heavy one"


def test_requires_python_is_the_environment_files_python():
    """tomllib (the tests) needs 3.11; environment.yml pins the same minor version."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(item for item in env["dependencies"] if isinstance(item, str) and item.startswith("python="))
    assert project["requires-python"] == ">=" + python.split("=", 1)[1] == ">=3.11"


def test_cli_help_does_not_import_heavy_libraries():
    code = ("import sys; from mmkd_helpers.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'monai', 'nibabel', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_mmkd_phantom_does_not_import_torch_or_monai(tmp_path):
    """Generating the course's data must work, and stay quick to start, on a machine where torch is slow to import."""
    code = ("import sys; from mmkd_helpers.cli import main; "
            f"assert main(['phantom', '--out', {str(tmp_path / 'cases')!r}, '--n', '1', '--size', '24']) == 0; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert len(list((tmp_path / "cases").glob("*/*_seg.nii.gz"))) == 1


def test_console_script_is_installed():
    out = subprocess.run(["mmkd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "phantom" in out.stdout and "evaluate" in out.stdout


def test_nothing_a_user_reads_points_outside_the_project():
    """The maintainers' folder beside the repository (real data, reference notes) is not part of what users get:
    README, notebooks, package and download docs never refer to it."""
    readable = [ROOT / "README.md", ROOT / "environment.yml", ROOT / "pyproject.toml",
                *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "notebooks").glob("*.md"),
                *(ROOT / "mmkd_helpers").rglob("*.py"), *(ROOT / "data_download").glob("*.py"),
                *(ROOT / "data_download").glob("*.md"), *(ROOT / "data_download").glob("*.txt")]
    pattern = re.compile(r"\.\./shared|shared/(data|reference|papers)|methods_spec")
    offenders = [str(p.relative_to(ROOT)) for p in readable if pattern.search(p.read_text(errors="replace"))]
    assert len(readable) > 20 and not offenders, offenders


def package_imports() -> dict:
    """``{module: {package modules it imports}}`` for every module of mmkd_helpers, imports inside functions
    included, and importing ``a.b.c`` counted as importing the packages ``a.b`` and ``a`` too (Python runs them)."""
    root = ROOT / "mmkd_helpers"
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets |= {module, *(f"{module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        expanded = set()
        for target in targets & set(names):
            pieces = target.split(".")
            expanded |= {".".join(pieces[:k]) for k in range(2, len(pieces) + 1)}
        graph[name] = {t for t in expanded if t in names and t != name and not name.startswith(t + ".")}
    return graph


def test_the_package_has_no_import_cycle():
    """The modules import one way (README, "The package at a glance"): a cycle, even one hidden by an import
    inside a function, means two modules each need the other, and neither can be read or tested alone."""
    graph = package_imports()
    assert "mmkd_helpers.methods" in graph["mmkd_helpers.training"]  # the walk sees imports at all
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
