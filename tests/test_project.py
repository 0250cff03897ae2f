"""The project's own set-up stays consistent: dependencies, environments, README and CI."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}


def _requirements(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        name, spec = m.group(1).lower(), m.group(2).replace(" ", "")
        out[CONDA_NAMES.get(name, name)] = spec
    return out


def _conda_deps(path):
    deps = yaml.safe_load(path.read_text())["dependencies"]
    return _requirements([d for d in deps if isinstance(d, str) and not d.startswith(("python=", "pip"))])


def test_environment_yml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _conda_deps(ROOT / "environment.yml") == _requirements(project["dependencies"])


def test_rule_environment_is_environment_yml_without_tools():
    full = _conda_deps(ROOT / "environment.yml")
    rules = _conda_deps(ROOT / "workflow/envs/awd.yaml")
    assert set(full) - set(rules) == {"snakemake", "pytest"}
    assert all(full[k] == v for k, v in rules.items())


def _readme_command(marker):
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\s*```(?:bash|sh)\n(.+?)\n```", text, re.S)
    assert m, f"README has no '{marker}' block"
    return m.group(1).strip()


def test_readme_has_two_quick_start_commands_and_ci_runs_the_test_one():
    main, tests = _readme_command("main-command"), _readme_command("test-command")
    assert "\n" not in main and "\n" not in tests
    assert "snakemake --cores all" in main and "pytest" in tests
    for cmd in (main, tests):  # torch pinned before anything that could pull it unpinned
        install = re.search(r"pip install -e '?\.", cmd)
        assert install and cmd.index("torch==2.13.0") < install.start(), cmd
    ci = (ROOT / ".ci/run").read_text()
    assert "test-command" in ci and "CI=true" in ci
