"""An Asterisk restart while ICM runs (chan_sip and PJSIP): the daemon logs in again,
resynchronises presence, publishes its globals again, and routes the next calls through
every entry."""

from __future__ import annotations

from pathlib import Path

from .pbx import Asterisk, Icm, Phones, place_call, result_of, wait_until


def test_the_daemon_routes_again_after_an_asterisk_restart(pbx: Asterisk, tmp_path: Path) -> None:
    own = Asterisk(tmp_path / "asterisk", pbx.tech)  # the session's one stays up
    own.start()
    daemon = Icm(own, tmp_path, "icm")
    phones = Phones(own, tmp_path)
    try:
        daemon.bind("+74955550001", "101")
        daemon.start()
        phones.start("101", "answer", talk_ms=300)
        for entry in ("ami", "agi", "curl"):
            assert routed(own, tmp_path, entry) == ("ANSWERED", "101")
        own.restart()
        wait_until(lambda: daemon.resyncs() >= 2, 30, "ICM to log in again")
        daemon.wait_ready()
        for entry in ("ami", "agi", "curl"):
            assert routed(own, tmp_path, entry) == ("ANSWERED", "101")
    finally:
        phones.stop_all()
        daemon.stop()
        own.stop()


def routed(pbx: Asterisk, tmp_path: Path, entry: str) -> tuple[str, str]:
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry=entry, caller="74955550001")
    result = result_of(pbx, call, mark=mark)
    assert call.wait(30) == 0
    return result["status"], result["manager"]
