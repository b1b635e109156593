"""Config fuzzing: every malformed file gives ConfigError lines naming the file (and the
key), and ``icm check-config`` exits 2 with those lines: never a traceback.

Three layers: random bytes and text mutations of icm.toml.example (the TOML parser),
random values at random places of the example's tables (validation), and the files this
fuzzing found escaping as tracebacks or silently accepted (regression cases), also run
through the real CLI in a subprocess."""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icm import cli
from icm.config import Config, ConfigError, from_dict, load

from .fuzzing import fuzz

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TEXT = (ROOT / "icm.toml.example").read_text(encoding="utf-8")
EXAMPLE = tomllib.loads(EXAMPLE_TEXT)
ENV = {"ICM_AMI_SECRET": "fuzz-secret-value"}


def outcome(path: Path, environ: dict[str, str]) -> Config | list[str]:
    """The loaded config, or its error lines; anything else escapes and fails the test."""
    try:
        return load(path, environ)
    except ConfigError as exc:
        assert exc.lines, "a ConfigError without a line"
        for line in exc.lines:
            assert line.startswith(f"{path}: "), line
            assert "\n" not in line and "Traceback" not in line, line
        return exc.lines


def check_cli(path: Path, environ: dict[str, str]) -> None:
    """`icm check-config` prints OK and exits 0, or prints only error lines and exits 2."""
    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["check-config", "-c", str(path)])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if code == 0:
        assert out.getvalue().startswith(f"{path}: OK"), out.getvalue()
        return
    assert code == 2, (code, err.getvalue())
    lines = err.getvalue().splitlines()
    assert lines and all(line.startswith(f"{path}: ") for line in lines), err.getvalue()


# -- the parser: bytes and text -----------------------------------------------------------


@fuzz(150)
@given(st.binary(max_size=400))
def test_random_bytes(tmp_path, data):
    path = tmp_path / "icm.toml"
    path.write_bytes(data)
    outcome(path, ENV)
    check_cli(path, ENV)


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    lines = EXAMPLE_TEXT.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "insert", "cut", "replace"]))
        if action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        elif action == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(max_size=5)) + lines[i][at + 1 :]
        if not lines:
            break
    return "\n".join(lines)


@fuzz(200)
@given(mutated_text())
def test_text_mutations_of_the_example(tmp_path, text):
    path = tmp_path / "icm.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome(path, ENV)
    check_cli(path, ENV)


# -- validation: any TOML value anywhere ---------------------------------------------------

SCALARS = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "\x00", "127.0.0.1", "a" * 300, "::1", "icmdb", "101", "+79161234567"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


def paths(node: Any, trail: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [trail] if trail else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*trail, key))
    return out


KNOWN_PATHS = [
    *paths(EXAMPLE),
    ("managers",),
    ("managers", "101"),
    ("managers", "101", "mobiles"),
    ("managers", "101", "name"),
    ("sources", "amocrm"),
    ("ami", "secret_file"),
    ("ami", "secret"),
    ("sources", "icmdb", "token"),
]


def put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value


@st.composite
def mutated_tables(draw: st.DrawFn) -> dict[str, Any]:
    tree = tomllib.loads(EXAMPLE_TEXT)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(
            st.one_of(
                st.sampled_from(KNOWN_PATHS),
                st.lists(st.text(max_size=8), min_size=1, max_size=3).map(tuple),
            )
        )
        put(tree, path, draw(TOML_VALUES))
    return tree


@fuzz(300)
@given(mutated_tables(), st.sampled_from([ENV, {}, {"ICM_AMI_SECRET": " "}]))
def test_any_value_anywhere(tree, environ):
    try:
        from_dict(tree, "icm.toml", environ)
    except ConfigError as exc:
        assert exc.lines
        assert all(line.startswith("icm.toml: ") and "\n" not in line for line in exc.lines)


# -- files that escaped as tracebacks or were silently accepted -------------------------------


def cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    binary = tmp_path / "binary-secret"
    binary.write_bytes(b"\xff\xfe\x00secret")
    return {
        "deep arrays": ("x = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML"),
        "deep tables": (
            "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n",
            "not valid TOML",
        ),
        "deep dotted keys": ("[" + ".".join(["a"] * 3000) + "]\n", "a: unknown key"),
        "secret file not UTF-8": (
            f'[ami]\nsecret_file = "{binary}"\n',
            "ami.secret_file: file",
        ),
        "secret file name with NUL": ('[ami]\nsecret_file = "a\\u0000b"\n', "ami.secret_"),
        "AMI host with a too long label": (f'[ami]\nhost = "{"a" * 70}.example"\n', "ami.host"),
        "AMI host with NUL": ('[ami]\nhost = "pbx\\u0000"\n', "ami.host"),
        "AMI host with a space": ('[ami]\nhost = "my pbx"\n', "ami.host"),
        "store path with NUL": ('[store]\nurl = "icm\\u0000.db"\n', "store.url"),
        "HTTP listen garbage": ('[http]\nlisten = "\\u0000:1"\n', "http.listen"),
        # "$" in a pattern lets a trailing newline through: the exception never applied.
        "exception with a newline": ('[routing]\nexceptions = ["100\\n"]\n', "exceptions[0]"),
        "extension range with a newline": (
            '[routing]\nextensions = ["100-199\\n"]\n',
            "extensions[0]",
        ),
        "manager key with a newline": ('[managers."101\\n"]\nname = "A"\n', "managers.'101\\n'"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "deep arrays",
        "deep tables",
        "deep dotted keys",
        "secret file not UTF-8",
        "secret file name with NUL",
        "AMI host with a too long label",
        "AMI host with NUL",
        "AMI host with a space",
        "store path with NUL",
        "HTTP listen garbage",
        "exception with a newline",
        "extension range with a newline",
        "manager key with a newline",
    ],
)
def test_found_cases_give_one_clear_line(tmp_path, case):
    text, expected = cases(tmp_path)[case]
    path = tmp_path / "icm.toml"
    path.write_text(text, encoding="utf-8")
    lines = outcome(path, ENV)
    assert isinstance(lines, list), f"{case}: accepted"
    assert any(expected in line for line in lines), lines


def test_the_real_cli_prints_no_traceback(tmp_path):
    for case, (text, _) in cases(tmp_path).items():
        path = tmp_path / "icm.toml"
        path.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "icm", "check-config", "-c", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, **ENV},
            timeout=30,
        )
        assert result.returncode == 2, (case, result.stderr)
        assert "Traceback" not in result.stderr, (case, result.stderr)
        assert result.stderr.startswith(f"{path}: "), (case, result.stderr)


def test_datetimes_and_nan_are_refused_with_the_key():
    tree = {
        "routing": {"lookup_budget_ms": datetime.time(1, 2)},
        "ami": {"keepalive_s": float("nan")},
    }
    with pytest.raises(ConfigError) as caught:
        from_dict(tree, "icm.toml", ENV)
    text = "\n".join(caught.value.lines)
    assert "routing.lookup_budget_ms" in text and "ami.keepalive_s" in text


def check_config(path: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "icm", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "text", ["", "\n", "[ami]\nport = 5038\n", '[routing]\narea_code = "495"\n']
)
def test_a_file_with_nobody_to_route_to_is_refused_with_one_line(tmp_path, text):
    path = tmp_path / "icm.toml"
    path.write_text(text, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{path}: nobody to route to: no [managers.<ext>] section and no routing.extensions "
        "(expected at least one manager's extension)"
    ]


def test_extensions_alone_are_someone_to_route_to(tmp_path):
    path = tmp_path / "icm.toml"
    path.write_text(
        f'[routing]\nextensions = ["100-199"]\n[store]\nurl = "{tmp_path / "icm.db"}"\n',
        encoding="utf-8",
    )
    assert isinstance(outcome(path, ENV), Config)


def test_an_endless_file_is_refused_quickly_with_one_line():
    result = check_config("/dev/zero", timeout=20)
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["/dev/zero: larger than 1024 KiB (expected a TOML file)"]


@pytest.mark.parametrize("where", ["directory", "/proc/self/status", "/dev/null"])
def test_check_config_refuses_a_store_path_that_cannot_hold_a_database(tmp_path, where):
    url = str(tmp_path) if where == "directory" else where
    path = tmp_path / "icm.toml"
    path.write_text(f'[managers.101]\nname = "Anna"\n[store]\nurl = "{url}"\n', encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 2, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}: store.url: {url!r} is "), line
