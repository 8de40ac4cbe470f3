"""One installable package with layers that hold.

The wheel installs `sluice` only (the checkout's api/, workflows/ and activities/ become
sluice.api, sluice.workflows, sluice.activities), the import contract in pyproject.toml holds on
it, and a user's own modules named like Sluice's folders are handlers like any other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from sluice.runtime.devstack import free_ports
from tests.conftest import REPO

SCRIPTS = Path(sysconfig.get_path("scripts"))
MAPPED = {"sluice": REPO / "sluice", "sluice/api": REPO / "api", "sluice/workflows": REPO / "workflows"}
MAPPED["sluice/activities"] = REPO / "activities"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("sluice-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked as site-packages would hold it."""
    root = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root)
    return root


def lint_imports(site: Path) -> subprocess.CompletedProcess[str]:
    # Run from the unpacked wheel (lint-imports puts the working directory on sys.path), so the
    # graph is the installed package's, with sluice.api where the mapping puts it.
    return subprocess.run(
        [str(SCRIPTS / "lint-imports"), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=site,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"sluice"}
    shipped = {n for n in names if n.endswith(".py")}
    expected = {
        f"{target}/{path.relative_to(folder).as_posix()}"
        for target, folder in MAPPED.items()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
        and not (
            target == "sluice" and path.relative_to(folder).parts[0] in ("api", "workflows", "activities")
        )
    }
    assert shipped == expected  # every module of the mapped folders, nothing else (no worker.py)
    assert "sluice/migrations/script.py.mako" in names and "sluice/py.typed" in names


def test_the_import_contract_holds(installed: Path) -> None:
    result = lint_imports(installed)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_layer_violation_breaks_the_contract(installed: Path, tmp_path: Path) -> None:
    broken = tmp_path / "site"
    shutil.copytree(installed, broken)
    service = broken / "sluice" / "services" / "configs.py"
    service.write_text(service.read_text() + "\nfrom sluice.api import app as _app  # noqa\n")
    result = lint_imports(broken)
    assert result.returncode == 1
    assert "sluice.services.configs -> sluice.api.app" in result.stdout


def test_every_core_module_is_under_the_core_contract() -> None:
    """A new module in sluice/ must be placed in a layer, or the contract would not see it."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = next(c for c in config["contracts"] if c["name"].startswith("The shared core"))
    layers = {"api", "workflows", "activities", "runtime", "__init__", "__main__"}
    present = {
        f"sluice.{p.stem}"
        for p in (REPO / "sluice").iterdir()
        if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.stem not in layers
    }
    assert present == set(core["source_modules"])


def test_importing_sluice_or_its_workflows_runs_no_io() -> None:
    """The workflow sandbox re-imports `sluice` and the workflow module: neither may pull in models
    twice, nor database, storage or settings code."""
    probe = (
        "import sys, json\n"
        "import sluice\n"
        "after_package = sorted(m for m in sys.modules if m.startswith('sluice.'))\n"
        "import sluice.workflows\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'sqlmodel', 'aioboto3', 'httpx', 'fastapi', 'sluice.db',"
        " 'sluice.storage', 'sluice.settings', 'sluice.services', 'sluice.handlers') if m in sys.modules)\n"
        "print(json.dumps([after_package, heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    after_package, heavy = json.loads(out.stdout)
    assert after_package == []
    assert heavy == []


def test_user_modules_named_like_sluice_folders_are_handlers(tmp_path: Path) -> None:
    """A project with `activities.py`, `workflows.py`, `api.py` and `worker.py` (temporalio's sample
    layout) runs them as handlers: `sluice run` from the project folder, as a user would."""
    project = tmp_path / "project"
    project.mkdir()
    for module in ("activities", "workflows", "api", "worker"):
        (project / f"{module}.py").write_text(
            "async def handle(message, ctx):\n"
            f"    await ctx.emit('{module}.txt', __file__)\n"
            "    return {'from': __name__}\n"
        )
    (project / "pipeline.yaml").write_text(
        "name: lookalikes\ninit_message: {route: a}\nroutes:\n"
        "  - {name: a, handler: 'activities:handle', stage: a, next: [b]}\n"
        "  - {name: b, handler: 'workflows:handle', stage: b, next: [c]}\n"
        "  - {name: c, handler: 'api:handle', stage: c, next: [d]}\n"
        "  - {name: d, handler: 'worker:handle', stage: d}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_") and k != "PYTHONPATH"}
    api, temporal, ui = free_ports(3)
    ports = ["--port", str(api), "--temporal-port", str(temporal), "--ui-port", str(ui)]
    result = subprocess.run(
        [
            str(SCRIPTS / "sluice"),
            "run",
            "pipeline.yaml",
            "--json",
            "--data-dir",
            str(tmp_path / "state"),
            *ports,
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    execution = json.loads(result.stdout)
    assert execution["status"] == "completed"
    storage = tmp_path / "state" / "storage" / execution["id"]
    for module, stage in (("activities", "a"), ("workflows", "b"), ("api", "c"), ("worker", "d")):
        assert (storage / stage / f"{module}.txt").read_text() == str(project / f"{module}.py")
