"""README.md stays true: its two first commands, .ci/run, and the example scenario."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def commands() -> list[str]:
    return [line.strip() for line in README.splitlines()[:12] if line.startswith("    ")]


def test_readme_opens_with_the_run_and_test_commands():
    run, test = commands()[:2]
    assert "pip install" in run and "icm run -c icm.toml.example" in run
    assert "pip install" in test and test.endswith("pytest")


def test_ci_runs_exactly_the_readme_test_command():
    test = commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test in ci.splitlines()


def test_readme_example_is_the_shipped_tested_scenario():
    example = (ROOT / "config" / "asterisk" / "extensions_example.conf").read_text()
    assert example.strip() in README


def test_installed_package_carries_the_asterisk_files():
    data = ROOT / "icm" / "data"
    for name in ("extensions_icm.conf", "manager_icm.conf", "extensions_example.conf"):
        assert (data / name).read_text() == (ROOT / "config" / "asterisk" / name).read_text()
