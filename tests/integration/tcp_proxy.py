"""A TCP proxy a test can open and close, to take a dependency away from one client without
stopping the shared broker or database that other tests use."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from urllib.parse import urlsplit, urlunsplit

# Ports handed out by this process: a caller binds its port later (a broker, a server, a
# proxy), so a second caller in between would find it free too. Drawn from their own
# generator, not the random module's, which tests and hypothesis may seed.
_handed_out: set[int] = set()
_draw = random.SystemRandom()


def free_port() -> int:
    """A port nothing listens on (yet), below the ephemeral range: a port the OS hands out
    for binding to 0 can be taken by an outgoing connection before the test's server binds it
    (the test suite, the Kafka brokers of its own and the API servers all take theirs here).
    Never the same port twice in one process: four ports drawn for one broker used to collide
    about once in 2,000 draws."""
    for _ in range(200):
        port = _draw.randint(20000, 32000)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


class TcpProxy:
    """Forwards 127.0.0.1:port to target while open; closed, nothing listens on the port."""

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def open(self) -> None:
        """Start listening (again) on the same port."""
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True
        )

    def freeze(self) -> None:
        """Stop answering without closing anything, as a hung server or a network that drops
        packets does: connections stay open, bytes are held, new connections wait."""
        self._flowing.clear()

    def thaw(self) -> None:
        """Pass the held bytes and connections on again."""
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and cut every forwarded connection, as a restart would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._pipes):
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._pipes, return_exceptions=True)
        self._pipes.clear()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await self._flowing.wait()
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


def database_proxy(dsn: str) -> tuple[TcpProxy, str]:
    """A proxy (not open yet) in front of the database of `dsn`, and the DSN through it."""
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    creds, _, _ = parts.netloc.rpartition("@")
    return proxy, urlunsplit(parts._replace(netloc=f"{creds}@{proxy.address}"))
