"""ASCII digits only (issue 13.11): ``str.isdigit`` and ``\\d`` also take Arabic-Indic,
full-width and other Unicode digits. No caller ID, token, extension or port holds them."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from icm.config import ConfigError, from_dict, split_host_port
from icm.numbers import Numbers, Skip, is_digits

CLIENT = "+79161234567"
FULL_WIDTH_ONE = "\uff11"  # FULLWIDTH DIGIT ONE
ARABIC_INDIC = "\u0668\u0669\u0661\u0666\u0661\u0662\u0663\u0664\u0665\u0666\u0667"  # 89161234567


@pytest.mark.parametrize(
    "raw", [f"8916{FULL_WIDTH_ONE}234567", ARABIC_INDIC, "+7916123456\u0667", "8916123456\u00b9"]
)
def test_a_number_with_a_non_ascii_digit_is_not_a_number(raw):
    assert isinstance(Numbers("RU", "495").normalise(raw), Skip)


def test_is_digits():
    assert is_digits("0123456789")
    assert not is_digits("") and not is_digits("\u0661\u0662") and not is_digits("1\uff12")


@pytest.mark.parametrize(
    "section",
    [
        {"routing": {"extensions": ["\u0661\u0660\u0661"]}},
        {"routing": {"extensions": ["100-1\uff199"]}},
        {"routing": {"area_code": "\uff14\uff19\uff15"}},
        {"managers": {"\u0661\u0660\u0661": {"name": "A"}}},
    ],
)
def test_config_refuses_non_ascii_digits(section):
    with pytest.raises(ConfigError):
        from_dict(section, "x.toml", {"ICM_AMI_SECRET": "s"})


def test_a_listen_port_in_other_digits_is_refused():
    with pytest.raises(ValueError):
        split_host_port("127.0.0.1:\u0669\u0661\u0668\u0660")


async def test_an_arabic_indic_token_is_dropped_as_malformed(pbx, make_config, start_daemon):
    daemon = await start_daemon(make_config(pbx.port))
    await daemon.store.learn(CLIENT, "101", time.time())
    pbx.ami.send_raw(
        "Event: UserEvent\r\nUserEvent: ICMRoute\r\nICMToken: \u0661\u0662\u0663\r\n"
        "ICMNumber: 89161234567\r\nChannel: SIP/trunk-1\r\nUniqueid: 1.1\r\n\r\n".encode()
    )
    for _ in range(200):
        if daemon.metrics.answers_dropped.labels("malformed")._value.get():
            break
        await asyncio.sleep(0.01)
    assert daemon.metrics.answers_dropped.labels("malformed")._value.get() == 1
    assert daemon.metrics.requests.labels("ami")._value.get() == 0


async def test_http_route_does_not_read_a_full_width_digit(pbx, make_config, start_daemon):
    pbx.register("101")
    daemon = await start_daemon(make_config(pbx.port))
    await daemon.store.learn(CLIENT, "101", time.time())
    url = f"http://127.0.0.1:{daemon.http.port}/route"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, params={"number": "89161234567"}) as response:
            assert (await response.text()).startswith("DIAL|")
        number = f"8916{FULL_WIDTH_ONE}234567"
        async with session.get(url, params={"number": number}) as response:
            assert not (await response.text()).startswith("DIAL|")
