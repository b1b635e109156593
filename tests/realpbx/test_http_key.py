"""The optional /route key (issue 13.4) on the real PBX: the daemon publishes it as the
global ICM_HTTP_KEY, the shipped [icm-curl] sends it as a query parameter, and /route
refuses a request without it."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .pbx import Asterisk, Icm, Phones, place_call, result_of

KEY = "k3y-" + "x" * 20
CLIENT = "74950000101"


def test_the_curl_entry_sends_the_key_and_a_keyless_request_is_refused(
    pbx: Asterisk, phones: Phones, daemons: list[Icm], tmp_path: Path
) -> None:
    daemon = Icm(pbx, tmp_path, "icm-key", environ={"ICM_HTTP_TOKEN": KEY})
    daemons.append(daemon)
    daemon.bind(f"+{CLIENT}", "101")
    daemon.start()
    daemon.republish()
    assert pbx.ami.getvar("ICM_HTTP_KEY") == KEY
    phones.start("101", "answer", talk_ms=300)
    mark = pbx.ami.mark()
    call = place_call(pbx, tmp_path, entry="curl", caller=CLIENT)
    result = result_of(pbx, call, timeout=30, mark=mark)
    assert result["status"] == "ANSWERED" and result["manager"] == "101", result
    assert call.wait(30) == 0
    url = f"http://127.0.0.1:{daemon.http_port}/route?number={CLIENT}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5)
    assert refused.value.code in (401, 403)
    with urllib.request.urlopen(f"{url}&key={KEY}", timeout=5) as answer:
        assert answer.read().decode().startswith("DIAL|")
    assert KEY not in daemon.logs()
