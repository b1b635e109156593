"""The administrator's commands, run as `icm ...` would run them."""

import json
import time

import pytest

from icm import cli
from icm.store import SqliteStore


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.delenv("ICM_AMI_SECRET", raising=False)  # these commands need no AMI secret
    path = tmp_path / "icm.toml"
    path.write_text(
        f"""
[routing]
area_code = "495"
exceptions = ["100"]
[managers.101]
name = "Anna"
[managers.100]
name = "Director"
[store]
url = "{tmp_path / "icm.db"}"
""",
        encoding="utf-8",
    )
    return str(path)


def run(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bind_list_unbind(config, capsys):
    assert run(capsys, "bind", "8 916 123-45-67", "101", "--note", "VIP", "-c", config)[:2] == (
        0,
        "+79161234567 -> 101 (pinned)\n",
    )
    code, out, _ = run(capsys, "bindings", "-c", config)
    assert code == 0 and out.startswith("+79161234567     101") and "VIP" in out
    code, out, _ = run(capsys, "bindings", "--json", "-c", config)
    assert json.loads(out)[0] | {"at": 0} == {
        "number": "+79161234567",
        "target": "101",
        "pinned": True,
        "at": 0,
        "note": "VIP",
    }
    assert run(capsys, "unbind", "+79161234567", "-c", config)[0] == 0
    assert run(capsys, "unbind", "+79161234567", "-c", config)[0] == 1


def test_bind_refuses_what_icm_would_never_dial(config, capsys):
    code, _, err = run(capsys, "bind", "89161234567", "555", "-c", config)
    assert code == 2 and "'555' is neither a manager's extension" in err
    code, _, err = run(capsys, "bind", "89161234567", "100", "-c", config)
    assert code == 2 and "100 is an exception" in err
    code, _, err = run(capsys, "bind", "anonymous", "101", "-c", config)
    assert code == 2 and "not a phone number" in err
    # An external number is a valid target (a manager working from his mobile).
    assert run(capsys, "bind", "89161234567", "8 903 555 00 00", "-c", config)[1] == (
        "+79161234567 -> +79035550000 (pinned)\n"
    )


def test_lookup_explain_and_json(config, capsys, tmp_path):
    import asyncio

    async def seed():
        store = SqliteStore(tmp_path / "icm.db")
        await store.open()
        await store.learn("+79161234567", "101", time.time(), "inbound call, 42 s")
        await store.close()

    asyncio.run(seed())
    code, out, _ = run(capsys, "lookup", "8 916 123-45-67", "--explain", "-c", config)
    assert code == 0
    assert "+79161234567: DIAL -> PJSIP/101" in out
    assert "manager 101 (Anna), from icmdb" in out
    assert "1. icmdb" in out and "answered" in out and "inbound call, 42 s" in out
    code, out, _ = run(capsys, "lookup", "1234567", "--json", "-c", config)
    decision = json.loads(out)
    assert decision["status"] == "NOTFOUND" and decision["number"] == "+74951234567"
    assert decision["steps"][0]["source"] == "icmdb"
    assert decision["steps"][0]["outcome"] == "no-answer"
    # A hidden caller ID is not a number to look up: one line, as bind says it.
    code, out, err = run(capsys, "lookup", "anonymous", "--explain", "-c", config)
    assert (code, out) == (2, "")
    assert err == "icm: 'anonymous' is not a phone number (hidden caller ID)\n"
    code, out, _ = run(capsys, "lookup", "8 495 101-00-00", "--explain", "-c", config)
    assert code == 0 and "1. icmdb" in out


def test_forget(config, capsys, tmp_path):
    import asyncio

    async def seed():
        store = SqliteStore(tmp_path / "icm.db")
        await store.open()
        await store.learn("+79161234567", "101", time.time())
        await store.close()

    asyncio.run(seed())
    assert run(capsys, "forget", "89161234567", "-c", config)[1] == "+79161234567: forgotten\n"
    assert (
        run(capsys, "forget", "89161234567", "-c", config)[1] == "+79161234567: nothing learned\n"
    )


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "check-config" in capsys.readouterr().out


def test_lookup_explain_at_a_moment_shows_each_rule(capsys, tmp_path, monkeypatch):
    import asyncio

    monkeypatch.delenv("ICM_AMI_SECRET", raising=False)
    path = tmp_path / "icm.toml"
    path.write_text(
        f"""
[routing]
area_code = "495"
[managers.101]
name = "Anna"
deputies = ["102"]
[managers.102]
hours = {{ sat = "10:00-22:00" }}
[rules]
timezone = "Europe/Moscow"
hours = {{ mon = "09:00-18:00", sat = "10:00-14:00" }}
blocked = ["+7800*"]
[store]
url = "{tmp_path / "icm.db"}"
""",
        encoding="utf-8",
    )

    async def seed():
        store = SqliteStore(tmp_path / "icm.db")
        await store.open()
        await store.learn("+79161234567", "101", time.time(), "inbound call, 42 s")
        await store.close()

    asyncio.run(seed())
    config = str(path)
    args = ("lookup", "8 916 123-45-67", "--explain", "-c", config, "--at")
    code, out, _ = run(capsys, *args, "2026-12-05 21:30")  # a Saturday night
    assert code == 0
    assert "+79161234567: DIAL -> PJSIP/102" in out
    assert "checks in [rules] order at Sat 2026-12-05 21:30 MSK" in out
    assert "1. blocked   passed   not a blocked caller" in out
    assert "3. lookup    found    icmdb: 101" in out
    assert (
        "4. hours     away     Sat 2026-12-05 21:30: manager 101 outside the default hours " in out
    )
    assert "6. deputy    deputy   away: deputy 102 takes the call" in out
    assert "decided by: deputy" in out
    code, out, _ = run(capsys, *args, "2026-12-05 23:30")  # 102 has gone home too
    assert "+79161234567: OFFHOURS -> back to the scenario" in out
    assert "no deputy is free (102 outside his hours (sat 10:00-22:00))" in out
    code, out, _ = run(capsys, *args, "2026-12-05 12:00")
    assert "DIAL -> PJSIP/101" in out
    assert "if the manager's dial ends BUSY or NOANSWER or CHANUNAVAIL: deputy 102" in out
    code, out, _ = run(capsys, "lookup", "88005553535", "--explain", "-c", config)
    assert "BLOCKED -> back to the scenario" in out and "decided by: blocked" in out
    code, _, err = run(capsys, *args, "tomorrow")
    assert code == 2 and "--at 'tomorrow' is not a date and time" in err
    code, out, _ = run(
        capsys, "lookup", "89161234567", "--json", "-c", config, "--at", "2026-12-05 21:30"
    )
    decision = json.loads(out)
    assert (decision["rule"], decision["deputy"], decision["status"]) == ("deputy", "102", "DIAL")
    assert [c["rule"] for c in decision["checks"]][:3] == ["blocked", "vip", "lookup"]
