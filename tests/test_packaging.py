"""What ships: the production wheel, and the one the Dockerfile builds, carry no simulated
PBX; the test and demo extras bring it; pytest runs this working tree's copy of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*_cache", ".hypothesis"
)


def build_wheel(src: Path, out: Path) -> zipfile.ZipFile:
    """The wheel ``pip install`` builds from ``src``, built offline: no index, no
    dependencies, this environment's setuptools (the test extra's) instead of a fresh one."""
    setuptools = pytest.importorskip("setuptools")
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    assert (major, minor) >= (70, 1), "the test extra's setuptools: pip install -e '.[test]'"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--wheel-dir", str(out), str(src)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def docker_build_context(dst: Path) -> Path:
    """The files the Dockerfile's build stage copies before ``pip wheel .``."""
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    stages = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    for line in lines[stages[0] : stages[1]]:
        if not line.startswith("COPY ") or "--from" in line:
            continue
        *sources, target = line.split()[1:]
        for source in sources:
            where = dst / target / source if target.endswith("/") else dst / target
            where.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, where, symlinks=True, ignore=NOT_SOURCES)
            else:
                shutil.copy2(ROOT / source, where)
    return dst


def requirements(wheel: zipfile.ZipFile) -> list[str]:
    (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    return [line for line in text.splitlines() if line.startswith("Requires-Dist:")]


def assert_product_only(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert [name for name in names if name.startswith(("simpbx/", "icm/testing/"))] == []
    for shipped in ("icm/router.py", "icm/data/extensions_icm.conf", "connectors/amocrm.py"):
        assert shipped in names


def test_production_wheel_carries_no_simulator(tmp_path):
    """``pip install .`` from a full checkout: simpbx/ is there, and stays out."""
    src = tmp_path / "checkout"
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCES)
    wheel = build_wheel(src, tmp_path / "wheels")
    assert_product_only(wheel)
    simulator = [line for line in requirements(wheel) if "icm-simpbx" in line]
    assert simulator, "the test and demo extras install the simulator"
    for line in simulator:  # only through the extras, never for a plain install
        assert line.endswith(('extra == "test"', 'extra == "demo"')), line


def test_docker_image_wheel_carries_no_simulator(tmp_path):
    """The Dockerfile copies what the daemon needs and builds the wheel from it."""
    wheel = build_wheel(docker_build_context(tmp_path / "src"), tmp_path / "wheels")
    assert_product_only(wheel)
    assert [line for line in requirements(wheel) if "simpbx" in line] == []


def test_simulator_distribution_carries_the_whole_simulator(tmp_path):
    """What the test and demo extras install: every module of simpbx/, subpackages too."""
    src = tmp_path / "simpbx"  # pip builds in place: not in the working tree
    shutil.copytree(ROOT / "simpbx", src, symlinks=True, ignore=NOT_SOURCES)
    wheel = build_wheel(src, tmp_path / "wheels")
    names = set(wheel.namelist())
    modules = {
        path.relative_to(ROOT / "simpbx").as_posix()
        for path in (ROOT / "simpbx" / "simpbx").rglob("*.py")
    }
    assert modules <= names
    assert not [name for name in names if name.startswith("icm/")]


def test_tests_import_the_working_tree_simulator():
    """pytest reads simpbx/ from this tree (pyproject's pythonpath), not an installed copy."""
    import simpbx

    assert Path(simpbx.__file__).resolve().is_relative_to(ROOT / "simpbx" / "simpbx")
