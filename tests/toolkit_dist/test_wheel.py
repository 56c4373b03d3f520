"""The toolkit as users install it: build the floodgate-toolkit wheel from ``libs/floodgate``, install it
into a fresh virtual environment that holds nothing of the project, and run its smoke test there
(``_smoke.py``) under asyncio and under trio.

The dependencies come from the package index under the versions this project's venv pins (a constraints
file from ``pip freeze``), so a run is repeatable and pip's cache serves it. Realtime: it builds, starts
interpreters and installs (``make check-dist`` runs this folder alone).
"""

from __future__ import annotations

import email.parser
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLKIT = ROOT / "libs" / "floodgate"
SMOKE = Path(__file__).with_name("_smoke.py")

pytestmark = [pytest.mark.realtime, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    workdir: Path  # outside the repository, so nothing of it is on sys.path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"


def run(*args: object, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # Nothing of this interpreter's environment leaks in; pip's own settings (index, cache) stay.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("toolkit_dist")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in libs/floodgate.
    source = work / "src"
    shutil.copytree(TOOLKIT, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", source, "-w", work / "dist", cwd=work)
    (wheel,) = (work / "dist").glob("floodgate_toolkit-*.whl")

    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    frozen = run(sys.executable, "-m", "pip", "freeze", "--exclude-editable", cwd=work).stdout
    constraints = work / "constraints.txt"
    constraints.write_text("\n".join(line for line in frozen.splitlines() if " @ " not in line) + "\n")
    # This project's pip installs into the new environment (``--python``): the venv gets no pip of its own.
    run(
        sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet",
        "-c", constraints, wheel, "trio", cwd=work,
    )  # fmt: skip
    shutil.copy(SMOKE, work / "_smoke.py")
    return Installed(wheel=wheel, venv=venv, workdir=work)


def test_wheel_holds_the_floodgate_package_alone(installed: Installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = wheel.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.parser.Parser().parsestr(wheel.read(metadata_name).decode())
    tops = {name.split("/")[0] for name in names}
    assert tops == {"floodgate", metadata_name.split("/")[0]}
    assert {"floodgate/__init__.py", "floodgate/_gate.py", "floodgate/cli.py"} <= set(names)
    assert not [n for n in names if n.endswith((".toml", ".md")) or "__pycache__" in n]

    assert metadata["Name"] == "floodgate-toolkit"
    requires = metadata.get_all("Requires-Dist")
    plain = {
        r.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip() for r in requires if ";" not in r
    }
    assert plain == {"anyio", "sniffio", "httpx", "pydantic", "prometheus-client", "structlog"}
    extra = {r.split(">")[0].strip() for r in requires if 'extra == "pg"' in r}
    assert extra == {"asyncpg", "trio-asyncio"}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_smoke_in_a_clean_venv(installed: Installed, backend: str):
    result = run(installed.python, "-I", "_smoke.py", backend, cwd=installed.workdir, timeout=60)
    assert result.stdout.splitlines()[-1] == f"smoke ok {backend}"


def test_the_floodgate_command_comes_with_the_wheel(installed: Installed):
    result = run(
        installed.venv / "bin" / "floodgate", "plan", "--budget", ROOT / "config" / "budget.toml",
        cwd=installed.workdir, timeout=60,
    )  # fmt: skip
    assert result.stdout.startswith("floodgate plan for ")
