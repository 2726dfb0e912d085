"""Upstreams on free 127.0.0.1 ports. `Upstream` (a thread per connection) records every request
it gets, so tests assert on what each upstream received, not only on what the client saw.
`FastUpstream` (one asyncio loop) keeps up with load and only counts, and its answer can be
switched while load runs."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class HasHeaders:
    """Case-insensitive lookups over a `headers` list of (name, value)."""

    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name.lower()]


@dataclass
class Received(HasHeaders):
    """One request as an upstream received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes


# A responder turns a received request into (status, headers, body).
Responder = Callable[[Received], "tuple[int, list[tuple[str, str]], bytes]"]


class ResetConnection(Exception):
    """Raised by a responder: the upstream resets the connection instead of answering."""


def fixed(
    status: int = 200,
    body: bytes | str | dict | list = b"",
    headers: list[tuple[str, str]] | None = None,
) -> Responder:
    """Always the same answer. A dict or list body is sent as JSON with content-type
    application/json unless `headers` say otherwise."""
    hdrs = list(headers or [])
    if isinstance(body, (dict, list)):
        payload = json.dumps(body).encode()
        if not any(n.lower() == "content-type" for n, _ in hdrs):
            hdrs.append(("content-type", "application/json"))
    else:
        payload = body.encode() if isinstance(body, str) else body

    def respond(_req: Received):
        return status, list(hdrs), payload

    return respond


def resetting() -> Responder:
    """Never answers: reads the request, then resets the connection (TCP RST)."""

    def respond(_req: Received):
        raise ResetConnection()

    return respond


class Delayed:
    """A responder that waits `seconds` before answering as `then` does.

    `finished` is set each time a delayed answer has been sent back to the handler (so "the
    canary is still sleeping" is `not finished.is_set()`); `started` is set when a request came
    in. The wait is on an Event, so `Upstream.stop` (which calls `stop()`) ends it at once.
    """

    def __init__(self, seconds: float, then: Responder | None = None):
        self.seconds = seconds
        self.then = then or fixed(200, {"ok": True})
        self.started = threading.Event()
        self.finished = threading.Event()
        self._wake = threading.Event()

    def __call__(self, req: Received):
        self.started.set()
        self._wake.wait(self.seconds)
        try:
            return self.then(req)
        finally:
            self.finished.set()

    def stop(self) -> None:
        self._wake.set()


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up first (Envoy giving up on a slow canary) is expected here, not a
    traceback on stderr."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Upstream:
    """An HTTP/1.1 server on a free 127.0.0.1 port that records what it receives.

    By default it answers 200 with JSON naming itself and echoing the class and features
    headers; pass `respond` to answer otherwise. With `record=False` it keeps nothing (a
    server left running outside a test).
    """

    def __init__(self, name: str, respond: Responder | None = None, port: int = 0, record: bool = True):
        self.name = name
        self.record = record
        self.respond = respond or self._echo
        self.received: list[Received] = []
        self._lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each answer would
            # wait out a 40 ms delayed ACK.
            disable_nagle_algorithm = True

            def _read_body(self) -> bytes:
                if "chunked" not in (self.headers.get("transfer-encoding") or "").lower():
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size + 2)[:-2])  # the chunk and its CRLF
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)

            def _handle(self):
                body = self._read_body()
                req = Received(self.command, self.path, list(self.headers.items()), body)
                if upstream.record:
                    with upstream._lock:
                        upstream.received.append(req)
                try:
                    status, headers, payload = upstream.respond(req)
                except ResetConnection:
                    self._reset()
                    return
                self.send_response(status)
                for n, v in headers:
                    self.send_header(n, v)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            def _reset(self):
                """Close the connection without an answer: SO_LINGER 0 makes close() send an RST."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.rfile.close()
                self.wfile.close()
                self.connection.close()
                # The server still flushes and closes wfile after this request: let it.
                self.wfile = io.BytesIO()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = _handle

            def log_message(self, *args):
                pass

        self._server = _QuietServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _echo(self, req: Received):
        body = json.dumps(
            {
                "upstream": self.name,
                "method": req.method,
                "path": req.path,
                "x-user-class": req.header("x-user-class"),
                "x-features": req.header("x-features"),
            }
        ).encode()
        return 200, [("content-type", "application/json")], body

    def start(self) -> "Upstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        # A responder that sleeps (Delayed) is woken first, so that no handler outlives the test.
        wake = getattr(self.respond, "stop", None)
        if wake is not None:
            wake()
        self._server.shutdown()
        self._server.server_close()

    def take(self) -> list[Received]:
        """The requests received since the last call."""
        with self._lock:
            got, self.received = self.received, []
        return got


@dataclass(frozen=True)
class Reply:
    """What a `FastUpstream` does with one request: answers `status`, `headers`, `body` after
    `delay` seconds, or with `reset` closes the connection with a TCP RST (after `delay`)
    instead. With `stall`, the headers and half the body go out at once and the rest `stall`
    seconds later; `stall` with `reset` sends the headers and half the body, then resets
    after `stall` seconds. `label` names the reply in the upstream's tally (default: the
    status, or "reset")."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    delay: float = 0.0
    reset: bool = False
    stall: float = 0.0
    label: str = ""

    def name(self) -> str:
        return self.label or ("reset" if self.reset else str(self.status))


@dataclass(frozen=True)
class Seen:
    """A request as a `FastUpstream` read it (header names lowercase, the last value wins)."""

    method: str
    path: str
    headers: dict[str, str]


def json_reply(value, status: int = 200, **kw) -> Reply:
    return Reply(status=status, body=json.dumps(value).encode(), **kw)


def _abort_with_rst(writer) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FastUpstream:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 for load tests.

    `reply` (a `Reply`, or a function of the `Seen` request returning one) can be replaced at
    any time; each request uses the one current when its headers were read. `close_port()`
    closes the listening socket and every open connection (connection refused from then on),
    `open_port()` listens again on the same port. `tally()` counts requests by
    (method, x-user-class, reply name) as they arrive.
    """

    def __init__(self, name: str, reply: "Reply | Callable[[Seen], Reply]", port: int = 0):
        self.name, self.reply, self.port = name, reply, port
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        self._tasks: set = set()
        self._lock = threading.Lock()
        self._tally: dict[tuple[str, str, str], int] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"upstream-{name}", daemon=True)

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> "FastUpstream":
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close_port(self) -> None:
        self._call(self._close())

    def open_port(self) -> None:
        self._call(self._listen())

    def tally(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._tally)

    def count(self) -> int:
        return sum(self.tally().values())

    # -- the loop's side

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for t in list(self._tasks):
            t.cancel()

    @staticmethod
    async def _read_body(reader, headers: dict[str, str]) -> None:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while size := int((await reader.readline()).split(b";")[0].strip() or b"0", 16):
                await reader.readexactly(size + 2)  # the chunk and its CRLF
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
        elif length := int(headers.get("content-length") or 0):
            await reader.readexactly(length)

    async def _serve(self, reader, writer) -> None:
        task = asyncio.current_task()
        self._writers.add(writer)
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines[1:] if line)}
                await self._read_body(reader, headers)
                reply = self.reply if isinstance(self.reply, Reply) else self.reply(Seen(method, target, headers))
                with self._lock:
                    key = (method, headers.get("x-user-class", ""), reply.name())
                    self._tally[key] = self._tally.get(key, 0) + 1
                await asyncio.sleep(reply.delay)
                if reply.reset and not reply.stall:
                    return _abort_with_rst(writer)
                if writer.is_closing() or reader.at_eof():
                    return  # the client gave up while this answer was delayed
                head_out = f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(reply.body)}\r\n"
                head_out += "".join(f"{n}: {v}\r\n" for n, v in reply.headers) + "\r\n"
                payload = b"" if method == "HEAD" else reply.body
                cut = len(payload) // 2 if reply.stall else len(payload)
                try:
                    writer.write(head_out.encode("latin-1") + payload[:cut])
                    await writer.drain()
                    if reply.stall:
                        await asyncio.sleep(reply.stall)
                        if writer.is_closing() or reader.at_eof():
                            return
                        if reply.reset:
                            return _abort_with_rst(writer)
                        writer.write(payload[cut:])
                        await writer.drain()
                except ConnectionError:
                    return
                if headers.get("connection", "").lower() == "close":
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.transport.abort()
