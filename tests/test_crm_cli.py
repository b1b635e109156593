"""`icm lookup NUMBER --explain [--json]` against each CRM: the same guarded sources as
the daemon, each source's answer and time shown."""

import asyncio
import json

import pytest

from icm import cli

from .crm_fakes import FakeAmoCrm, FakeBitrix24, FakeMegaplan


def fake_for(name):
    if name == "amocrm":
        fake = FakeAmoCrm()
        fake.add_user(5550001, "Anna Petrova", "anna@example.ru")
        fake.add_contact(101, ["+7 916 123-45-67"], 5550001)
        return fake, 'base_url = "{url}"', {"ICM_AMOCRM_TOKEN": fake.long_lived}
    if name == "bitrix24":
        fake = FakeBitrix24()
        fake.add_user("7", "Anna Petrova", inner="101")
        fake.add_entity("contact", 1, ["89161234567"], "7")
        return fake, "", {"ICM_BITRIX24_WEBHOOK": None}
    fake = FakeMegaplan()
    fake.add_employee(1000005, "Anna Petrova")
    fake.add_client("ContractorHuman", 1, ["+79161234567"], [("Employee", 1000005)])
    section = f'base_url = "{{url}}"\nusername = "{FakeMegaplan.USERNAME}"'
    return fake, section, {"ICM_MEGAPLAN_PASSWORD": FakeMegaplan.PASSWORD}


@pytest.mark.parametrize("name", ["amocrm", "bitrix24", "megaplan"])
async def test_lookup_explains_each_crm(tmp_path, monkeypatch, capsys, name):
    fake, section, env = fake_for(name)
    await fake.start()
    try:
        for key, value in env.items():
            monkeypatch.setenv(key, value or fake.webhook)
        path = tmp_path / "icm.toml"
        path.write_text(
            f"""
[routing]
sources = ["{name}", "icmdb"]
area_code = "495"
[managers.101]
name = "Anna"
ids = {{ amocrm = 5550001, megaplan = 1000005 }}
[sources.{name}]
{section.format(url=fake.url)}
[store]
url = "{tmp_path / "icm.db"}"
""",
            encoding="utf-8",
        )
        args = ["lookup", "8 916 123-45-67", "--explain", "--json", "-c", str(path)]
        assert await asyncio.to_thread(cli.main, args) == 0
        decision = json.loads(capsys.readouterr().out)
        assert (decision["status"], decision["manager"], decision["source"]) == (
            "DIAL",
            "101",
            name,
        )
        assert decision["steps"][0]["outcome"] == "answered"
        assert "Anna Petrova" in decision["steps"][0]["detail"]
        assert decision["steps"][0]["ms"] > 0
        # The CRM down: the explanation says so and the next source is asked.
        await fake.stop()
        args = ["lookup", "8 903 555-00-00", "--explain", "-c", str(path)]
        assert await asyncio.to_thread(cli.main, args) == 0
        out = capsys.readouterr().out
        assert f"1. {name:<10} error" in out and "cannot connect" in out
        assert "2. icmdb      no-answer" in out
    finally:
        await fake.stop()
