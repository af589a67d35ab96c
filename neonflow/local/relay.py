"""The front door's byte relay: ``Pipe``, one side of a session, and the read-only filters.

A ``Pipe`` is an ``asyncio.Protocol`` with awaitable reads for the handshake; once paired with
its peer it relays bytes as they come, or, with a ``Filter``, cuts them into messages and lets a
few kinds be rewritten. On a read_only endpoint the client's queries that could make the session
writable become PostgreSQL's refusal, and a ``ParameterStatus`` saying it became so ends it.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
from collections.abc import Callable
from typing import NamedTuple, cast

from neonflow.local.wire import MAX_STARTUP, Refused, frame

# Statements that would make a read_only session writable (the rest PostgreSQL refuses itself).
_READ_WRITE = re.compile(
    r"\bread(?:\s|/\*.*?\*/|--[^\n]*\n)+write\b|\b(?:set|reset)\b[^;]*transaction_read_only"
    r'|\bu&"',  # a Unicode-escaped identifier could spell transaction_read_only
    re.IGNORECASE | re.DOTALL,
)
_PARAMETER = re.compile(rb"\$(\d{1,5})\b")
_MAX_PARAMETERS = 65535  # what the protocol's count holds
_TEXT = 25  # the OID of text
_REFUSE_READ_WRITE = (
    "DO $neonflow$ BEGIN RAISE EXCEPTION USING ERRCODE = '25006', "
    "MESSAGE = 'cannot set transaction read-write mode during recovery'; END $neonflow$"
)


class Filter(NamedTuple):
    """The messages of ``kinds`` go through ``rewrite`` (None ends the session); the rest as is."""

    kinds: frozenset[int]
    rewrite: Callable[[bytes, bytes], bytes | None]


class Pipe(asyncio.Protocol):
    """One side of a session: awaitable reads during the handshake, then a pipe to ``peer``.

    With a ``filter`` the pipe cuts what arrives into messages and passes whole ones only.
    """

    def __init__(self, on_open: Callable[[Pipe], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Pipe | None = None
        self.filter: Filter | None = None
        self.on_close: Callable[[], None] | None = None
        self.closed = False
        self._on_open = on_open
        self._buffer = bytearray()
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            # asyncio sets this only on sockets made with IPPROTO_TCP; without it every small
            # write (a TLS flight, a query's answer) waits out the peer's delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and self.filter is None:
            peer.write(data)
            return
        self._buffer += data
        if peer is not None:
            self._drain_to(peer)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.peer is not None:
            self.peer.close()
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    def pause_writing(self) -> None:
        # The other side writes into us: let it wait until our buffer drains (a big COPY).
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    # -- the handshake's side --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if self.closed:
                raise ConnectionResetError("the other side closed the connection")
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def startup_packet(self) -> bytes:
        """A packet without a type byte (``StartupMessage``, ``SSLRequest``, ``CancelRequest``)."""
        (length,) = struct.unpack("!I", await self.read(4))
        if not 8 <= length <= MAX_STARTUP:
            raise Refused("08P01", "invalid length of startup packet")
        return await self.read(length - 4)

    async def message(self) -> tuple[bytes, bytes]:
        header = await self.read(5)
        (length,) = struct.unpack("!I", header[1:])
        if length < 4:
            raise Refused("08P01", "invalid message length")
        return header[:1], await self.read(length - 4)

    def pipe_to(self, peer: Pipe) -> None:
        """From now on, what arrives goes to ``peer`` (starting with what is buffered)."""
        self.peer = peer
        if self._buffer:
            self._drain_to(peer)

    def _drain_to(self, peer: Pipe) -> None:
        buf, filter_ = self._buffer, self.filter
        if filter_ is None:
            peer.write(bytes(buf))
            buf.clear()
            return
        # Only the messages the filter looks at are cut out; runs of the others (a big result's
        # rows) are passed on uncopied, and the buffer is consumed once at the end.
        out, passed, at = bytearray(), 0, 0
        while len(buf) - at >= 5:
            (length,) = struct.unpack_from("!I", buf, at + 1)
            end = at + 1 + length
            if len(buf) < end:
                break
            if buf[at] in filter_.kinds:
                kept = filter_.rewrite(bytes(buf[at : at + 1]), bytes(buf[at + 5 : end]))
                if kept is None:
                    self.close()
                    return
                out += buf[passed:at]
                out += kept
                passed = end
            at = end
        out += buf[passed:at]
        del buf[:at]
        if out:
            peer.write(bytes(out))


def _refuse_read_write(kind: bytes, body: bytes) -> bytes:
    """A client message on a read_only endpoint: as is, or rewritten to PostgreSQL's refusal."""
    if kind == b"Q":
        if _READ_WRITE.search(body.decode(errors="replace")):
            return frame(b"Q", _REFUSE_READ_WRITE.encode() + b"\0")
    elif kind == b"P":
        name, _, rest = body.partition(b"\0")
        query, _, params = rest.partition(b"\0")
        if _READ_WRITE.search(query.decode(errors="replace")):
            typed = _parameter_types(query, params)
            return frame(b"P", name + b"\0" + _REFUSE_READ_WRITE.encode() + b"\0" + typed)
    return frame(kind, body)


def _parameter_types(query: bytes, params: bytes) -> bytes:
    """The refusal's parameter types: one for each parameter the client will bind.

    As many as the query uses (a client need not type them all), of the client's types where
    given, else text: PostgreSQL cannot infer a type for a parameter the refusal ignores.
    """
    (count,) = struct.unpack_from("!H", params) if len(params) >= 2 else (0,)
    given = (
        list(struct.unpack_from(f"!{count}I", params, 2)) if len(params) >= 2 + 4 * count else []
    )
    used = min(max(map(int, _PARAMETER.findall(query)), default=0), _MAX_PARAMETERS)
    types = [oid or _TEXT for oid in given] + [_TEXT] * (used - len(given))
    return struct.pack(f"!H{len(types)}I", len(types), *types)


def _stay_read_only(kind: bytes, body: bytes) -> bytes | None:
    """A server message on a read_only endpoint; None ends the session (it became writable)."""
    if kind == b"S":
        name, _, value = body.partition(b"\0")
        if name == b"default_transaction_read_only" and value.rstrip(b"\0") != b"on":
            return None
    return frame(kind, body)


# On a read_only endpoint: what a client sends that could make the session writable (simple and
# extended queries), and what PostgreSQL says when it became so (ParameterStatus).
READ_ONLY_CLIENT = Filter(frozenset(b"QP"), _refuse_read_write)
READ_ONLY_SERVER = Filter(frozenset(b"S"), _stay_read_only)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs (its TLS and sockets cost less per message), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
