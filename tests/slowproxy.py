"""A TCP proxy in front of a real server that holds back one reply: a Redis on a loaded
host whose answer comes after the client's socket timeout (the command was done)."""

from __future__ import annotations

import asyncio
import contextlib


class SlowReplies:
    """Forwards bytes both ways; :meth:`hold` delays the reply to the next request that
    contains ``marker`` (one time)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.delayed = 0  # replies held back so far
        self.reads = 0  # reads of requests from the clients (about one per round trip)
        self._marker: bytes | None = None
        self._seconds = 0.0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold(self, marker: bytes, seconds: float) -> None:
        self._marker, self._seconds = marker, seconds

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        slow = asyncio.Event()  # the next reply on this connection is held back

        async def requests() -> None:
            while data := await reader.read(65536):
                self.reads += 1
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    slow.set()
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def replies() -> None:
            while data := await upstream_reader.read(65536):
                if slow.is_set():
                    slow.clear()
                    self.delayed += 1
                    await asyncio.sleep(self._seconds)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.create_task(requests()), asyncio.create_task(replies())]
        self._tasks.update(tasks)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for task in tasks:
                task.cancel()
                self._tasks.discard(task)
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (writer, upstream_writer):
                with contextlib.suppress(Exception):
                    w.close()
