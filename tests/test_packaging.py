"""The install story: pyproject and environment.yml agree, CI runs the README's commands, imports are cheap."""

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


def _block(text: str, marker: str) -> list:
    match = re.search(rf"# BEGIN {marker}\n(.*?)# END {marker}", text, re.S)
    assert match, f"no '{marker}' block"
    return [line for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for marker in ("README browser", "README install", "README test"):
        for command in _block(ci, marker):
            assert command in readme, f".ci/run runs {command!r}, which the README does not show"


def test_cli_help_does_not_import_heavy_libraries():
    code = ("import sys; from mmkd_helpers.cli import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('torch', 'monai', 'nibabel', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_console_script_is_installed():
    out = subprocess.run(["mmkd", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "phantom" in out.stdout and "evaluate" in out.stdout
