"""Configuration: the example is valid; every mistake gives one clear line and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from icm import cli
from icm.config import ConfigError, from_dict, load

ROOT = Path(__file__).resolve().parents[1]
ENV = {"ICM_AMI_SECRET": "s3cret-value"}


def errors_of(text: str, tmp_path: Path, environ=ENV) -> list[str]:
    path = tmp_path / "icm.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path, environ)
    return caught.value.lines


def test_the_example_is_valid_and_documents_every_key():
    config = load(ROOT / "icm.toml.example", ENV)
    assert config.routing.sources == ["icmdb"]
    assert config.routing.lookup_budget_ms == 1500
    assert config.ami.secret.get_secret_value() == "s3cret-value"
    example = (ROOT / "icm.toml.example").read_text()
    for section in ("ami", "routing", "dial", "store", "http", "log"):
        for key in type(getattr(config, section)).model_fields:
            if key != "secret":
                assert f"{key} =" in example, f"{section}.{key} is not in icm.toml.example"
    for key in type(config.source_settings("icmdb")).model_fields:
        assert f"{key} =" in example, f"sources.icmdb.{key} is not in icm.toml.example"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "[routing]\nring_mobile = true\n",
            "routing.ring_mobile: unknown key (did you mean 'ring_mobiles'?)",
        ),
        (
            "[routing]\nlookup_budget_ms = 'fast'\n",
            "routing.lookup_budget_ms: expected an integer, got 'fast'",
        ),
        (
            "[routing]\nlookup_budget_ms = 5\n",
            "routing.lookup_budget_ms: expected a value at least 100, got 5",
        ),
        (
            "[routing]\nsources = ['icmdb', 'amocrn']\n",
            "routing.sources[1]: unknown source 'amocrn'",
        ),
        ("[routing]\nsources = ['icmdb', 'icmdb']\n", "routing.sources: a source is listed twice"),
        (
            "[routing]\nring_mobiles = 'yes'\n",
            "routing.ring_mobiles: expected true or false, got 'yes'",
        ),
        (
            "[routing]\nlookup_budget_ms = '1500'\n",
            "routing.lookup_budget_ms: expected an integer, got '1500'",
        ),
        ("[routing]\nsources = 'icmdb'\n", "routing.sources: expected a list like"),
        ("[ami]\nkeepalive_s = 'soon'\n", "ami.keepalive_s: expected a number, got 'soon'"),
        (
            "[routing]\ndefault_number = '12ab'\n",
            "routing.default_number: '12ab' is not a phone number",
        ),
        (
            "[routing]\nexceptions = ['100', 'x1']\n",
            "routing.exceptions[1]: 'x1' is not a phone number",
        ),
        (
            "[routing]\nextensions = ['200-100']\n",
            "routing.extensions[0]: '200-100' is not an extension",
        ),
        (
            "[managers.101]\nmobiles = ['123']\n",
            "managers.101.mobiles[0]: '123' is not a phone number",
        ),
        ("[managers.abc]\nname = 'x'\n", "managers.abc: 'abc' is not an extension"),
        ("[dial]\nextension = 'SIP/101'\n", "dial.extension: 'SIP/101' lacks {ext}"),
        (
            "[dial]\nexternal = 'SIP/trunk/{ext},60'\n",
            "dial.external: 'SIP/trunk/{ext},60' has characters",
        ),
        ("[ami]\nport = 99999\n", "ami.port: expected a value at most 65535, got 99999"),
        ("[ami]\nsecret = 'hunter2'\n", "ami.secret: secrets are not read from the config file"),
        (
            "[sources.icmdb]\ntoken = 'abc'\n",
            "sources.icmdb.token: secrets are not read from the config file",
        ),
        (
            "[sources.nope]\n",
            "sources.nope: unknown source (expected one of: amocrm, bitrix24, icmdb, megaplan)",
        ),
        (
            "[sources.icmdb]\nmin_talk = 3\n",
            "sources.icmdb.min_talk: unknown key (did you mean 'min_talk_s'?)",
        ),
        ("[http]\nlisten = 'localhost'\n", "http.listen: 'localhost' is not host:port"),
        (
            "[log]\nlevel = 'loud'\n",
            "log.level: expected 'debug', 'info', 'warning' or 'error', got 'loud'",
        ),
        ("[htp]\n", "htp: unknown key (did you mean 'http'?)"),
        ("[routing\n", "not valid TOML"),
        ("routing = 3\n", "routing: expected a table, got 3"),
    ],
)
def test_each_mistake_names_file_key_and_expectation(tmp_path, text, line):
    lines = errors_of(text, tmp_path)
    assert any(line in got for got in lines), lines
    assert all(got.startswith(str(tmp_path / "icm.toml") + ": ") for got in lines)


def test_missing_secret_names_the_variable_and_never_a_value(tmp_path):
    [line] = errors_of("", tmp_path, environ={})
    assert "ami.secret_env: environment variable ICM_AMI_SECRET is not set" in line


def test_secret_file(tmp_path):
    secret = tmp_path / "ami-secret"
    secret.write_text("from-file\n")
    config = from_dict({"ami": {"secret_file": str(secret)}}, "x.toml", {})
    assert config.ami.secret.get_secret_value() == "from-file"
    assert "from-file" not in repr(config) and "from-file" not in str(config.ami)
    with pytest.raises(ConfigError, match="cannot read the AMI secret from file"):
        from_dict({"ami": {"secret_file": str(tmp_path / "none")}}, "x.toml", {})


def test_several_mistakes_are_all_reported(tmp_path):
    lines = errors_of("[routing]\nring_mobile = 1\nlookup_budget_ms = 'x'\n[htp]\n", tmp_path)
    assert len(lines) == 3


def test_check_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[routing]\nsources = ['nope']\n")
    result = subprocess.run(
        [sys.executable, "-m", "icm", "check-config", "-c", str(bad)],
        capture_output=True,
        text=True,
        env={"ICM_AMI_SECRET": "x", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"{bad}: routing.sources[0]: unknown source 'nope' "
        "(expected one of: amocrm, bitrix24, icmdb, megaplan)"
    )
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_check_config_ok(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ICM_AMI_SECRET", "x")
    assert cli.main(["check-config", "-c", str(ROOT / "icm.toml.example")]) == 0
    assert "OK" in capsys.readouterr().out


def test_missing_file(tmp_path, capsys):
    assert cli.main(["check-config", "-c", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: file not found" in capsys.readouterr().err
