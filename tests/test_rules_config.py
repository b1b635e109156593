"""The rules' settings: every mistake is one line naming the file and the key."""

import datetime
from pathlib import Path

import pytest

from icm.config import ConfigError, load

ENV = {"ICM_AMI_SECRET": "s3cret-value"}


def errors_of(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "icm.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path, ENV)
    return caught.value.lines


def test_a_full_rules_section_is_read(tmp_path):
    path = tmp_path / "icm.toml"
    path.write_text(
        """
[rules]
order = ["vip", "blocked", "hours", "lookup", "presence", "deputy"]
timezone = "Europe/Moscow"
holidays = [2026-12-31, "2027-01-01"]
hours = { mon = "09:00-13:00, 14:00-18:00", fri = "09:00-17:00" }
vip = [{ numbers = ["+7 495 765-43-21", "+7916555*"], to = "101", name = "Key" }]
blocked = ["84951112233", "+7800*"]
[managers.101]
hours = { sat = "10:00-24:00" }
quiet = ["13:00-14:00"]
leave = [{ from = 2026-12-21, to = "2027-01-08" }]
deputies = ["102", "103"]
deputy_when = ["away", "noanswer"]
[managers.102]
deputies = ["103"]
[managers.103]
""",
        encoding="utf-8",
    )
    config = load(path, ENV)
    assert config.rules.order[:2] == ["vip", "blocked"]
    assert config.rules.holidays == [datetime.date(2026, 12, 31), datetime.date(2027, 1, 1)]
    assert config.managers["101"].leave[0].end == datetime.date(2027, 1, 8)
    assert config.managers["101"].deputy_when == ["away", "noanswer"]
    assert config.managers["102"].deputy_when == ["away", "leave", "offline", "busy", "noanswer"]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            '[managers.101]\ndeputies = ["102"]\n[managers.102]\ndeputies = ["101"]\n',
            "managers.101.deputies: a loop of deputies (101 -> 102 -> 101)",
        ),
        (
            '[managers.101]\ndeputies = ["102"]\n[managers.102]\ndeputies = ["103"]\n'
            '[managers.103]\ndeputies = ["101"]\n',
            "a loop of deputies (101 -> 102 -> 103 -> 101)",
        ),
        (
            '[managers.101]\ndeputies = ["109"]\n',
            "managers.101.deputies[0]: unknown deputy '109' (expected a manager of [managers])",
        ),
        (
            '[managers.101]\ndeputies = ["101"]\n',
            "managers.101.deputies[0]: 101 is this manager himself",
        ),
        ('[managers.101]\ndeputies = ["1a"]\n', "managers.101.deputies: '1a' is not an extension"),
        (
            '[managers.101]\ndeputy_when = ["sick"]\n',
            "managers.101.deputy_when[0]: expected 'away', 'leave', 'offline', 'busy' or "
            "'noanswer', got 'sick'",
        ),
        (
            "[managers.101]\nleave = [{ from = 2026-12-14, to = 2026-12-01 }]\n",
            "managers.101.leave[0]: the leave ends (2026-12-01) before it starts (2026-12-14)",
        ),
        (
            "[managers.101]\nleave = [{ from = 2026-12-14 }]\n",
            "managers.101.leave[0].to: missing",
        ),
        (
            '[managers.101]\nquiet = ["13:00-12:00"]\n',
            "managers.101.quiet: '13:00-12:00' ends before it starts",
        ),
        ('[rules]\nhours = { mon = "9-18" }\n', "rules.hours: mon: '9-18' is not a time range"),
        ('[rules]\nhours = { mond = "09:00-18:00" }\n', "rules.hours: unknown day 'mond'"),
        ('[rules]\nhours = { mon = "09:00-25:00" }\n', "rules.hours: mon: 25:00 is not a time"),
        ('[rules]\ntimezone = "Mars/Base"\n', "rules.timezone: unknown time zone 'Mars/Base'"),
        ('[rules]\nholidays = ["31.12.2026"]\n', "rules.holidays[0]:"),
        ('[rules]\norder = ["vip", "vip", "lookup"]\n', "rules.order: a check is listed twice"),
        ('[rules]\norder = ["vip", "hours"]\n', "rules.order: the order lacks 'lookup'"),
        ('[rules]\norder = ["lookup", "weather"]\n', "rules.order[1]: expected 'blocked'"),
        ('[rules]\nblocked = ["+7916"]\n', "rules.blocked[0]: '+7916' is not a phone number"),
        ('[rules]\nblocked = ["7916*"]\n', "rules.blocked[0]: '7916*' is not a prefix"),
        (
            '[rules]\nvip = [{ numbers = ["+74957654321"], to = "109" }]\n',
            "rules.vip[0].to: unknown manager '109'",
        ),
        ("[rules]\nvip = [{ numbers = [] }]\n", "rules.vip[0].numbers:"),
        ('[rules]\nvip = [{ number = ["+74957654321"] }]\n', "rules.vip[0].number: unknown key"),
        ("[rules]\ndeputy_learns = 'yes'\n", "rules.deputy_learns: expected true or false"),
    ],
)
def test_each_mistake_names_its_key(tmp_path, text, line):
    lines = errors_of(text, tmp_path)
    assert any(f"icm.toml: {line}" in found or line in found for found in lines), lines
    assert all(found.startswith(str(tmp_path / "icm.toml") + ": ") for found in lines), lines
