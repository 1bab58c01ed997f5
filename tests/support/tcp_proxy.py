"""A TCP proxy the tests own, so that a test can make a server unreachable in the middle of a job.

    with TcpProxy("127.0.0.1", server_port) as proxy:
        client = make_client(proxy.url_for("/v1"))
        ...
        proxy.cut()      # every open connection is reset, new ones are refused (ECONNREFUSED)
        ...
        proxy.restore()  # listening again, on the same port

It forwards bytes both ways without reading them (HTTP/1.1 keep-alive, streaming, anything), passes a
half-close on to the other side, and applies back-pressure (it never buffers more than a read's worth).

It runs its own asyncio loop in a background thread, so it works the same under sync tests, async tests and
a server in a subprocess. Only the standard library is used.

How the port is kept while cut: the listening socket is not closed but shut down for reading, which on Linux
takes it out of the LISTEN state (connect() is refused, queued connections are reset) while it stays bound,
so nobody else can take the port and `restore()` simply listens on the same socket again. Where that is not
supported, the socket is closed and `restore()` binds the same port anew.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

_READ_SIZE = 64 * 1024
_BACKLOG = 512
_ACCEPTS_PER_WAKEUP = 64  # accept in batches, so a burst of connects cannot starve the forwarding
_CALL_TIMEOUT = 30.0


@dataclass(eq=False)
class _Connection:
    """One client connection and its upstream. `abort` resets whatever of it exists."""

    client_sock: socket.socket
    task: asyncio.Task[None] | None = None
    transports: list[asyncio.WriteTransport] = field(default_factory=list)

    def abort(self) -> None:
        for transport in self.transports:
            transport.abort()  # RST to the peer, buffers dropped
        self.client_sock.close()  # in case no transport owns it yet; closing twice is harmless


class TcpProxy:
    """Forward connections from 127.0.0.1:<port> to target_host:target_port; cut and restore on demand.

    The public methods are thread-safe and block until done; call them from any thread except the proxy's
    own loop (from inside it they would wait on themselves).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        """`port` 0 picks a free port; after start() it is fixed for the proxy's whole life (cuts included)."""
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self.connect_timeout = connect_timeout
        self.connections_total = 0  # client connections accepted
        self.cut_events = 0  # calls to cut() that took the proxy down
        self.bytes_forwarded = 0  # both directions
        self._listener: socket.socket | None = None
        self._listening = False
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- public API ------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy has not been started")
        return self._port

    @property
    def is_cut(self) -> bool:
        return self._loop is not None and not self._stopped and not self._listening

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def url_for(self, path: str = "/", scheme: str = "http") -> str:
        """An URL through the proxy: url_for("/v1") -> "http://127.0.0.1:<port>/v1"."""
        return f"{scheme}://{self.host}:{self.port}/{path.lstrip('/')}"

    def start(self) -> TcpProxy:
        """Bind (errors surface here, in the caller's thread), then serve from a background thread."""
        if self._loop is not None or self._stopped:
            raise RuntimeError("a TcpProxy starts once")
        self._listener = _bind(self.host, self._requested_port)
        self._port = int(self._listener.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"tcp-proxy-{self._port}", daemon=True
        )
        self._thread.start()
        ready.wait()
        try:
            self._call(self._listen)
        except BaseException:
            self.stop()
            raise
        return self

    def cut(self) -> None:
        """Refuse new connections and reset every open one, both directions. No-op when already cut."""
        self._run_coroutine(self._cut())

    def restore(self) -> None:
        """Accept connections again, on the same port. No-op when not cut."""
        self._call(self._listen)

    def stop(self) -> None:
        """Reset every connection, close the listener, end the loop and its thread. Idempotent."""
        if self._loop is None or self._stopped:
            self._stopped = True
            return
        self._stopped = True
        try:
            self._run_coroutine(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            assert self._thread is not None
            self._thread.join(timeout=_CALL_TIMEOUT)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "cut" if self.is_cut else "up"
        return f"TcpProxy({self.host}:{self._port} -> {self.target_host}:{self.target_port}, {state})"

    # -- the loop thread -------------------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, function: Callable[[], None]) -> None:
        async def wrapper() -> None:
            function()

        self._run_coroutine(wrapper())

    def _run_coroutine(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._loop is None or (self._stopped and not self._loop.is_running()):
            coroutine.close()
            raise RuntimeError("the proxy is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=_CALL_TIMEOUT)

    def _listen(self) -> None:
        if self._listening:
            return
        assert self._loop is not None and self._port is not None
        if self._listener is None:  # the fallback of _stop_listening closed it
            self._listener = _bind(self.host, self._port)
        self._listener.listen(_BACKLOG)
        self._loop.add_reader(self._listener.fileno(), self._accept)
        self._listening = True

    def _stop_listening(self) -> None:
        if not self._listening or self._listener is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._listener.fileno())
        self._listening = False
        try:
            self._listener.shutdown(socket.SHUT_RD)  # Linux: no longer LISTEN, still bound
        except OSError:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        """Reader callback: accept what is queued. Synchronous, so a cut can never lose an accepted socket."""
        assert self._listener is not None and self._loop is not None
        for _ in range(_ACCEPTS_PER_WAKEUP):
            try:
                client_sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the listener went away under us
                return
            client_sock.setblocking(False)
            connection = _Connection(client_sock)
            self._connections.add(connection)
            self.connections_total += 1
            connection.task = self._loop.create_task(self._serve(connection))

    async def _serve(self, connection: _Connection) -> None:
        try:
            client_reader, client_writer = await asyncio.open_connection(sock=connection.client_sock)
            connection.transports.append(client_writer.transport)
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), self.connect_timeout
                )
            except (OSError, TimeoutError):
                connection.abort()  # the server is down: the client sees its connection reset
                return
            connection.transports.append(upstream_writer.transport)
            await asyncio.gather(
                self._pump(client_reader, upstream_writer, connection),
                self._pump(upstream_reader, client_writer, connection),
            )
            for writer in (client_writer, upstream_writer):
                writer.close()  # both sides sent EOF and everything is flushed
        finally:
            if any(not t.is_closing() for t in connection.transports) or not connection.transports:
                connection.abort()
            self._connections.discard(connection)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        """Copy one direction until EOF, then half-close the other side; an error resets both sides."""
        try:
            while data := await reader.read(_READ_SIZE):
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:  # ConnectionResetError, BrokenPipeError, ...: the peer of the other side must know
            connection.abort()

    async def _cut(self) -> None:
        if not self._listening:
            return
        self._stop_listening()
        await self._drop_connections()
        self.cut_events += 1

    async def _shutdown(self) -> None:
        self._stop_listening()
        await self._drop_connections()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _drop_connections(self) -> None:
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
            if connection.task is not None:
                connection.task.cancel()
        tasks = [c.task for c in connections if c.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the aborted transports run connection_lost and close their sockets


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to an explicit port (0: a free one), SO_REUSEADDR like asyncio's servers.

    The port is always bound by number: on Linux a socket auto-bound with port 0 gives the port back when it
    stops listening, and the proxy must keep it while cut.
    """
    attempts = 20 if port == 0 else 1
    for attempt in range(attempts):
        candidate = port or _free_port(host)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, candidate))
        except OSError:
            sock.close()
            if attempt + 1 == attempts:
                raise
            continue
        sock.setblocking(False)
        return sock
    raise AssertionError("unreachable")  # pragma: no cover


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


__all__ = ["TcpProxy"]
