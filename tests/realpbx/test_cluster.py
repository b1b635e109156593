"""Two ICM instances on one Redis beside one real Asterisk (chan_sip and PJSIP): every
call gets exactly one answer; kill one instance, the other routes every later call.

"One answer" is counted on the PBX's side: each AMI ``Setvar`` of ``ICM_REPLY`` on the
caller's channel shows up as a ``VarSet`` event the observer sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from simpbx.redis_server import RedisServer

from .pbx import Asterisk, Icm, Phones, place_call, result_of, start_of, wait_until

CALLER = "74954440001"


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt install redis-server; .ci/run does)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def answers(pbx: Asterisk, mark: int, uniqueid: str) -> list[str]:
    """The ICM answers Setvar delivered to the channel (the dialplan's own clearing of
    ICM_REPLY is empty)."""
    return [
        e.get("value", "")
        for e in pbx.ami.since(mark)
        if e.name == "VarSet"
        and e.get("uniqueid") == uniqueid
        and e.get("variable") == "ICM_REPLY"
        and e.get("value")
    ]


def one_call(pbx: Asterisk, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="ami", caller=CALLER)
    result = result_of(pbx, call, mark=mark)
    started = start_of(pbx, call, mark=mark)
    assert call.wait(30) == 0
    return result, answers(pbx, mark, started["uniqueid"])


def test_two_instances_answer_once_and_survive_one(
    pbx: Asterisk,
    redis: RedisServer,
    phones: Phones,
    tmp_path: Path,
    daemons: list[Icm],
) -> None:
    first = Icm(pbx, tmp_path, "icm-a", store=redis.url)
    second = Icm(pbx, tmp_path, "icm-b", store=redis.url)
    daemons += [first, second]
    first.bind(f"+{CALLER}", "101")
    first.start()
    second.start()
    phones.start("101", "answer", talk_ms=300)
    for _ in range(4):
        result, replies = one_call(pbx, tmp_path)
        assert (result["status"], result["manager"]) == ("ANSWERED", "101"), result
        assert len(replies) == 1, replies
    won = first.metric("icm_claims_total", result="won") + second.metric(
        "icm_claims_total", result="won"
    )
    assert won >= 4

    first.kill()
    wait_until(lambda: second.readyz() == 200, 10, "the survivor to be ready")
    for _ in range(3):
        result, replies = one_call(pbx, tmp_path)
        assert (result["status"], result["manager"]) == ("ANSWERED", "101"), result
        assert len(replies) == 1, replies
