"""Configuration: the example is valid; every mistake gives one clear line and exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from icm import cli
from icm.config import ConfigError, ManagerSettings, from_dict, load
from icm.secrets import secret_fields

SOURCES = ("icmdb", "amocrm", "bitrix24", "megaplan")

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
    sections = [(s, type(getattr(config, s))) for s in ("ami", "routing", "dial", "store")]
    sections += [(s, type(getattr(config, s))) for s in ("http", "agi", "log", "rules")]
    sections += [(f"sources.{s}", type(config.source_settings(s))) for s in SOURCES]
    for section, model in sections:
        secrets = secret_fields(model)
        for key in model.model_fields:
            # A secret is written as <key>_env (or <key>_file), never <key> itself.
            written = f"{key}_env =" if key in secrets else f"{key} ="
            assert written in example, f"{section}.{written} is not in icm.toml.example"
    for key in ManagerSettings.model_fields:
        assert f"{key} =" in example, f"managers.<ext>.{key} is not in icm.toml.example"


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


def test_crm_secrets_come_from_the_environment_or_a_file(tmp_path):
    section = {"base_url": "https://example.amocrm.ru"}
    raw = {"routing": {"sources": ["amocrm", "icmdb"]}, "sources": {"amocrm": section}}
    with pytest.raises(ConfigError) as caught:
        from_dict(raw, "x.toml", {}, ami_secret=False)
    assert caught.value.lines == [
        "x.toml: sources.amocrm.token_env: environment variable ICM_AMOCRM_TOKEN is not set "
        "(expected the amoCRM long-lived token in it)"
    ]
    config = from_dict(raw, "x.toml", {"ICM_AMOCRM_TOKEN": "tok-123"}, ami_secret=False)
    settings = config.source_settings("amocrm")
    assert settings.token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(config) and "tok-123" not in str(settings)
    secret = tmp_path / "token"
    secret.write_text("tok-from-file\n")
    raw["sources"]["amocrm"] = section | {"token_file": str(secret)}
    config = from_dict(raw, "x.toml", {}, ami_secret=False)
    assert config.source_settings("amocrm").token.get_secret_value() == "tok-from-file"


def test_only_active_sources_need_their_secrets_and_sections(tmp_path):
    sections = {"megaplan": {"base_url": "https://x.megaplan.ru", "username": "icm"}}
    config = from_dict({"sources": sections}, "x.toml", {}, ami_secret=False)
    assert config.source_settings("megaplan").password.get_secret_value() == ""
    with pytest.raises(ConfigError) as caught:
        from_dict({"routing": {"sources": ["megaplan"]}}, "x.toml", {}, ami_secret=False)
    assert "x.toml: sources.megaplan.base_url: missing (this key is required)" in (
        caught.value.lines
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[sources.amocrm]\ntoken = 'abc'\n", "sources.amocrm.token: secrets are not read"),
        (
            "[sources.bitrix24]\nwebhook = 'https://x/rest/1/code/'\n",
            "sources.bitrix24.webhook: secrets are not read from the config file",
        ),
        (
            "[sources.amocrm]\nbase_url = 'https://x.amocrm.ru'\nrefresh_token = 'r'\n",
            "sources.amocrm.refresh_token: secrets are not read",
        ),
        ("[sources.amocrm]\nbase_url = 'example.amocrm.ru'\n", "sources.amocrm.base_url: "),
        (
            "[sources.amocrm]\nbase_url = 'https://x.amocrm.ru'\nauth = 'oauth'\n",
            "sources.amocrm: auth = 'oauth' needs client_id and redirect_uri",
        ),
        (
            "[sources.amocrm]\nbase_url = 'https://x.amocrm.ru'\nrate_per_s = 10.0\n",
            "sources.amocrm.rate_per_s: expected a value at most 7.0, got 10.0",
        ),
        (
            "[sources.bitrix24]\nentities = ['contact', 'deal']\n",
            "sources.bitrix24.entities[1]: expected 'contact', 'company' or 'lead', got 'deal'",
        ),
        ("[routing]\nlookup = 'fast'\n", "routing.lookup: expected 'chain' or 'parallel'"),
        ("[managers.101]\nids = { amocrn = 5 }\n", "managers.101.ids.amocrn: unknown source"),
        ("[managers.101]\nemail = 'anna'\n", "managers.101.email: 'anna' is not an e-mail"),
    ],
)
def test_crm_mistakes_name_the_key(tmp_path, text, line):
    lines = errors_of(text, tmp_path)
    assert any(line in got for got in lines), lines


def test_a_webhook_that_is_not_one_is_reported_without_its_value():
    raw = {"routing": {"sources": ["bitrix24"]}}
    with pytest.raises(ConfigError) as caught:
        from_dict(raw, "x.toml", {"ICM_BITRIX24_WEBHOOK": "hunter2-secret"}, ami_secret=False)
    [line] = caught.value.lines
    assert line.startswith("x.toml: sources.bitrix24.webhook_env: not a Bitrix24 inbound webhook")
    assert "hunter2" not in line


def test_check_config_exits_2_on_a_missing_crm_secret(tmp_path):
    path = tmp_path / "icm.toml"
    path.write_text(
        "[routing]\nsources = ['bitrix24']\n[sources.bitrix24]\nwebhook_env = 'B24_HOOK'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "icm", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env={"ICM_AMI_SECRET": "x", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"{path}: sources.bitrix24.webhook_env: environment variable B24_HOOK is not set "
        "(expected the Bitrix24 inbound webhook URL in it)"
    )


def test_bind_and_forget_need_no_crm_secret(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ICM_AMI_SECRET", raising=False)
    monkeypatch.delenv("ICM_AMOCRM_TOKEN", raising=False)
    path = tmp_path / "icm.toml"
    path.write_text(
        "[routing]\nsources = ['amocrm', 'icmdb']\n[managers.101]\n"
        f"[sources.amocrm]\nbase_url = 'https://x.amocrm.ru'\n[store]\nurl = '{tmp_path}/i.db'\n"
    )
    assert cli.main(["bind", "89161234567", "101", "-c", str(path)]) == 0
    assert cli.main(["forget", "89161234567", "-c", str(path)]) == 0
    assert cli.main(["bindings", "-c", str(path)]) == 0
    assert cli.main(["lookup", "89161234567", "-c", str(path)]) == 2
    assert "ICM_AMOCRM_TOKEN is not set" in capsys.readouterr().err
