"""Log injection and log size (issue 13.8): whatever callers and peers send, every log
line of the real daemon process is one line it wrote, of bounded size."""

from __future__ import annotations

import asyncio
import re
import socket
import urllib.parse
import urllib.request

from .conftest import until
from .daemons import DaemonProcess

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ +[\w.]+: ")


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def over_long_request(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /route?number=" + b"1" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock.recv(100)


async def test_caller_input_cannot_forge_log_lines_or_flood_the_log(pbx, tmp_path):
    daemon = DaemonProcess(tmp_path, "icm", pbx.port, str(tmp_path / "icm.db"))
    daemon.start()
    try:
        await pbx.ami.wait_login(1, timeout=20)
        await until(lambda: "ICM_WAIT" in pbx.globals, timeout=10)
        # 1. A newline in /route's number and uniqueid.
        query = urllib.parse.urlencode(
            {"number": "89161234567\nAction: Originate", "uniqueid": "1.1\r\nForged: yes"}
        )
        answer = await asyncio.to_thread(get, daemon.http_port, f"/route?{query}")
        assert answer.startswith("ANONYMOUS|")
        # 2. Terminal escapes and a 900 KB number in an AMI routing request, 20 times.
        huge = "8916" + "1" * 900_000
        for i in range(20):
            number = huge if i % 2 else "8916\x1b[31m1234567\r\x07"
            pbx.ami.send_raw(
                f"Event: UserEvent\r\nUserEvent: ICMRoute\r\nICMToken: {i + 1}\r\n"
                f"ICMNumber: {number}\r\nChannel: SIP/trunk-{i}\r\nUniqueid: 9.{i}\r\n\r\n".encode()
            )
        # 3. Over-long HTTP requests: a 400 each, one warning line for the lot.
        for _ in range(5):
            assert (await asyncio.to_thread(over_long_request, daemon.http_port)).startswith(
                b"HTTP/1.0 400"
            )
        await until(lambda: daemon.logs().count("icm.decision: ami ") == 20, timeout=20)
    finally:
        daemon.kill()
    text = daemon.logs()
    lines = text.splitlines()
    forged = [line for line in lines if not LINE.match(line)]
    assert forged == [], forged[:3]
    assert "Traceback" not in text
    assert "\x1b" not in text and "\x07" not in text
    assert len(text) < 100_000, f"{len(text)} bytes of log"
    assert max(len(line) for line in lines) < 5_000
    bad = [line for line in lines if "refused a bad request" in line]
    assert len(bad) == 1 and " WARNING " in bad[0]
