"""The local Neon's PostgreSQL front door, like Neon's proxy: the only way in with an API password.

Every endpoint has an address of its own (``127.x.y.z`` port 5432 on Linux, or ``127.0.0.1`` and a
port of its own where that cannot be bound), so the URI a Neon client builds from the endpoint's
``host`` reaches that endpoint and nothing else. A session:

1. TLS (``SSLRequest``; plain text is refused as Neon refuses it), with a certificate for the
   endpoint's address signed by the local CA.
2. SCRAM-SHA-256 or SCRAM-SHA-256-PLUS (``tls-server-end-point``) against the API password.
3. Neon's database name mapped to the branch's physical database; the proxy logs in to the
   embedded PostgreSQL as the same role with an internal password (PostgreSQL refuses the API's).
4. Then bytes are piped both ways. Cancel keys are the proxy's own, mapped to the backend's; on a
   read_only endpoint the pipe looks at the messages that could make the session writable.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import logging
import re
import secrets
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import psycopg
from psycopg import sql

from neonflow.local.scram import (
    MECHANISM,
    MECHANISM_PLUS,
    ClientExchange,
    ScramError,
    ServerExchange,
    Verifier,
    internal_password,
)
from neonflow.local.tls import Certificates, ServerTLS

if TYPE_CHECKING:
    from neonflow.local.engine import LocalNeon

log = logging.getLogger("neonflow.local.proxy")

NEON_PORT = 5432
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 3 << 16
_MAX_STARTUP = 10_000
_INSECURE = "connection is insecure (try using `sslmode=require`)"
_ROUTING = re.compile(r"(?:^|\s)(endpoint|project)=(\S*)")
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


class Refused(Exception):
    """A session refused with PostgreSQL's ``FATAL`` error (SQLSTATE ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_message(code: str, message: str, severity: str = "FATAL") -> bytes:
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message))
    )
    return _message(b"E", fields + b"\0")


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


def _auth(code: int, data: bytes = b"") -> bytes:
    return _message(b"R", struct.pack("!I", code) + data)


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
        if not 8 <= length <= _MAX_STARTUP:
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


def _parse_startup(body: bytes) -> dict[str, str]:
    parts = body[4:].split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        if key:
            params[key.decode(errors="replace")] = value.decode(errors="replace")
    return params


def _startup(params: dict[str, str]) -> bytes:
    body = struct.pack("!I", PROTOCOL_3_0)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _refuse_read_write(kind: bytes, body: bytes) -> bytes:
    """A client message on a read_only endpoint: as is, or rewritten to PostgreSQL's refusal."""
    if kind == b"Q":
        if _READ_WRITE.search(body.decode(errors="replace")):
            return _message(b"Q", _REFUSE_READ_WRITE.encode() + b"\0")
    elif kind == b"P":
        name, _, rest = body.partition(b"\0")
        query, _, params = rest.partition(b"\0")
        if _READ_WRITE.search(query.decode(errors="replace")):
            typed = _parameter_types(query, params)
            return _message(b"P", name + b"\0" + _REFUSE_READ_WRITE.encode() + b"\0" + typed)
    return _message(kind, body)


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
    return _message(kind, body)


# On a read_only endpoint: what a client sends that could make the session writable (simple and
# extended queries), and what PostgreSQL says when it became so (ParameterStatus).
_READ_ONLY_CLIENT = Filter(frozenset(b"QP"), _refuse_read_write)
_READ_ONLY_SERVER = Filter(frozenset(b"S"), _stay_read_only)


class Proxy:
    """The front door: one listener per endpoint, run on an asyncio loop of its own thread."""

    def __init__(self, neon: LocalNeon, certificates: Certificates) -> None:
        self.neon = neon
        self.certificates = certificates
        self.loop = new_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="proxy")
        self._servers: dict[str, asyncio.Server] = {}
        self._sockets: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancel_keys: dict[tuple[int, bytes], bytes] = {}
        self._verifiers: dict[tuple[str, str], Verifier] = {}
        self._mock_salt = secrets.token_bytes(16)
        self._per_address = True

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._close_all(), self.loop)
        try:
            future.result(timeout=10)
        except (TimeoutError, RuntimeError):
            log.warning("the proxy did not close its listeners in time")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _close_all(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in list(self._tasks):
            task.cancel()
        self._servers.clear()

    def open_all(self) -> None:
        """Listen for every endpoint (at its remembered host), and key the roles for the proxy.

        A host that cannot be had again (another program took the address) is replaced and
        remembered; PostgreSQL's role passwords become the internal ones, so that the API
        passwords stop working there (state folders from before the proxy had them).
        """
        neon = self.neon
        with neon.store.lock:
            endpoints = [(e["id"], e.get("host")) for e in neon.store.endpoints.values()]
            roles = list(neon.store.roles)
        changed = False
        for endpoint_id, host in endpoints:
            if endpoint_id in self._sockets:
                continue
            new_host = self.allocate(endpoint_id, host)
            if new_host != host:
                log.warning(
                    "endpoint %s: %s could not be had again; now %s", endpoint_id, host, new_host
                )
                with neon.store.lock:
                    endpoint = neon.store.endpoints.get(endpoint_id)
                    if endpoint is not None:
                        endpoint["host"] = new_host
                changed = True
        if changed:
            with neon.store.lock:
                neon.store.save()
        self.key_roles(roles)

    def key_roles(self, roles: list[str]) -> None:
        with psycopg.connect(self.neon.pg.dsn(), autocommit=True) as conn:
            for role in roles:
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(role),
                        sql.Literal(internal_password(self.neon.pg.password, role)),
                    )
                )

    # -- addresses -------------------------------------------------------------------------

    def allocate(self, endpoint_id: str, wanted: str | None = None) -> str:
        """Bind a listener for ``endpoint_id`` and return its ``host`` (``wanted`` if it can)."""
        with self._lock:
            if endpoint_id in self._sockets:
                address, port = self._sockets[endpoint_id].getsockname()[:2]
                return _host(address, port)
            sock = None
            if wanted:
                sock = _bind(*_split_host(wanted))
            if sock is None and self._per_address:
                sock = self._bind_own_address(endpoint_id)
            if sock is None:
                sock = _bind("127.0.0.1", 0)
            if sock is None:
                raise OSError("no loopback address or port is free for the proxy")
            address, port = sock.getsockname()[:2]
            try:
                tls = self.certificates.for_address(address)
            except BaseException:
                sock.close()  # no certificate (a full disk): the address stays free
                raise
            self._sockets[endpoint_id] = sock
        self.loop.call_soon_threadsafe(self._serve, endpoint_id, sock, tls)
        return _host(address, port)

    def release(self, endpoint_id: str) -> None:
        with self._lock:
            sock = self._sockets.pop(endpoint_id, None)
        if sock is not None:
            self.loop.call_soon_threadsafe(self._unserve, endpoint_id, sock)

    def _bind_own_address(self, endpoint_id: str) -> socket.socket | None:
        for attempt in range(8):
            digest = hashlib.sha256(f"{endpoint_id}/{attempt}".encode()).digest()
            # 127.0.x.x holds the usual 127.0.0.1 and Debian's 127.0.1.1: keep clear of it.
            address = f"127.{1 + digest[0] % 254}.{digest[1]}.{1 + digest[2] % 254}"
            try:
                return _bind(address, NEON_PORT, quiet=False)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:  # this system cannot bind 127.x.y.z at all
                    log.info("per-endpoint loopback addresses unavailable (%s); using ports", exc)
                    self._per_address = False
                    return None
        log.info("port %s is taken on every loopback address tried; using ports", NEON_PORT)
        self._per_address = False
        return None

    def _serve(self, endpoint_id: str, sock: socket.socket, tls: ServerTLS) -> None:
        def accept() -> Pipe:
            return Pipe(on_open=lambda pipe: self._spawn(self._session(pipe, endpoint_id, tls)))

        async def start() -> None:
            server = await self.loop.create_server(accept, sock=sock)
            if self._sockets.get(endpoint_id) is sock:
                self._servers[endpoint_id] = server
            else:
                server.close()

        self._spawn(start())

    def _unserve(self, endpoint_id: str, sock: socket.socket) -> None:
        server = self._servers.pop(endpoint_id, None)
        if server is not None:
            server.close()
        else:
            sock.close()

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- a session -------------------------------------------------------------------------

    async def _session(self, client: Pipe, endpoint_id: str, tls: ServerTLS) -> None:
        pg: Pipe | None = None
        try:
            # PostgreSQL's authentication_timeout: a silent client must not hold a session.
            pg = await asyncio.wait_for(self._handshake(client, endpoint_id, tls), 60)
        except TimeoutError:
            client.write(error_message("08006", "canceling authentication due to timeout"))
        except Refused as exc:
            client.write(error_message(exc.code, exc.message))
        except (ConnectionError, OSError, asyncio.CancelledError, ssl.SSLError):
            pass
        except Exception:  # one broken session must not take the proxy down
            log.exception("proxy session failed")
        if pg is None:
            client.close()

    async def _handshake(self, client: Pipe, endpoint_id: str, tls: ServerTLS) -> Pipe | None:
        assert client.transport is not None
        secure = False
        for _ in range(3):
            packet = await client.startup_packet()
            (code,) = struct.unpack_from("!I", packet)
            if code == SSL_REQUEST and not secure:
                client.write(b"S")
                loop = asyncio.get_running_loop()
                new = await loop.start_tls(client.transport, client, tls.context, server_side=True)
                client.transport, secure = cast(asyncio.Transport, new), True
            elif code == GSSENC_REQUEST:
                client.write(b"N")
            else:
                break
        else:
            raise Refused("08P01", "too many negotiation requests")
        if code == CANCEL_REQUEST:
            await self._cancel(packet)
            return None
        if not secure:
            raise Refused("28000", _INSECURE)
        if code >> 16 != 3:
            raise Refused("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
        params = _parse_startup(packet)
        self._negotiate(client, code, params)
        return await self._login(client, endpoint_id, tls, params)

    @staticmethod
    def _negotiate(client: Pipe, code: int, params: dict[str, str]) -> None:
        """Answer a client that asks for more than protocol 3.0 (as PostgreSQL does)."""
        unknown = [k for k in params if k.startswith("_pq_.")]
        for key in unknown:
            del params[key]
        if code != PROTOCOL_3_0 or unknown:
            body = struct.pack("!II", 0, len(unknown))
            body += b"".join(k.encode() + b"\0" for k in unknown)
            client.write(_message(b"v", body))

    async def _login(
        self, client: Pipe, endpoint_id: str, tls: ServerTLS, params: dict[str, str]
    ) -> Pipe:
        user = params.pop("user", "")
        if not user:
            raise Refused("28000", "no PostgreSQL user name specified in startup packet")
        database = params.pop("database", "") or user
        options = params.pop("options", "")
        for kind, value in _ROUTING.findall(options):
            if kind == "endpoint" and value != endpoint_id:
                raise Refused("08004", f"endpoint {value!r} is not the one at this address")
        options = _ROUTING.sub("", options).strip()
        password, physical, read_only = self._route(endpoint_id, user, database)
        for key in [k for k in params if "read_only" in k]:
            del params[key]
        backend = {"user": user, "database": physical or "", **params}
        if options:
            backend["options"] = options
        if read_only:
            backend["default_transaction_read_only"] = "on"
        # PostgreSQL's own login (a fork, its SCRAM) runs while the client computes its proof;
        # it is thrown away unless the client proves the password.
        early = None
        if physical is not None and password is not None:
            early = asyncio.ensure_future(self._connect_backend(backend))
        try:
            await self._authenticate(client, tls, user, password)
            if early is None:
                raise Refused("3D000", f'database "{database}" does not exist')
            try:
                pg, welcome = await early
            except _Forward as fwd:
                client.write(fwd.data)
                raise ConnectionResetError("PostgreSQL refused the session") from None
        except BaseException:
            if early is not None:
                _discard(early)
            raise
        client.write(welcome)
        if read_only:
            client.filter, pg.filter = _READ_ONLY_CLIENT, _READ_ONLY_SERVER
        client.pipe_to(pg)
        pg.pipe_to(client)
        if client.closed:
            pg.close()
        return pg

    def _route(
        self, endpoint_id: str, user: str, database: str
    ) -> tuple[str | None, str | None, bool]:
        """The role's API password, the physical database and whether the endpoint is read_only."""
        store = self.neon.store
        with store.lock:
            endpoint = store.endpoints.get(endpoint_id)
            branch = store.branches.get(endpoint["branch_id"]) if endpoint else None
            if endpoint is None or branch is None or branch.get("_deleted"):
                raise Refused("XX000", f"endpoint {endpoint_id} not found")
            if endpoint.get("disabled"):
                raise Refused("XX000", f"endpoint {endpoint_id} is disabled")
            role = store.roles.get(user)
            physical = next(
                (d["physical"] for d in branch["_databases"] if d["name"] == database), None
            )
            read_only = endpoint["type"] == "read_only"
            return (role["password"] if role else None), physical, read_only

    async def _authenticate(
        self, client: Pipe, tls: ServerTLS, user: str, password: str | None
    ) -> None:
        """SCRAM with the client; an unknown role goes through the same steps and fails last."""
        verifier = self._verifier(user, password)
        client.write(_auth(10, f"{MECHANISM_PLUS}\0{MECHANISM}\0\0".encode()))
        kind, body = await client.message()
        if kind != b"p":
            raise Refused("08P01", "expected a SASL response")
        mechanism, _, rest = body.partition(b"\0")
        name = mechanism.decode(errors="replace")
        if name not in (MECHANISM, MECHANISM_PLUS) or len(rest) < 4:
            raise Refused("08P01", "client selected an invalid SASL authentication mechanism")
        exchange = ServerExchange(verifier, name, tls.end_point_hash)
        failed = f'password authentication failed for user "{user}"'
        try:
            server_first = exchange.first(rest[4:].decode())
            client.write(_auth(11, server_first.encode()))
            kind, body = await client.message()
            if kind != b"p":
                raise Refused("08P01", "expected a SASL response")
            server_final = exchange.final(body.decode())
        except (ScramError, UnicodeDecodeError) as exc:
            if str(exc) == "wrong password":
                raise Refused("28P01", failed) from None
            raise Refused("28000", str(exc)) from None
        if password is None:
            raise Refused("28P01", failed)
        client.write(_auth(12, server_final.encode()))

    def _verifier(self, user: str, password: str | None) -> Verifier:
        if password is None:
            # Same shape and cost as a real role, so a probe learns nothing about role names.
            salt = hashlib.sha256(self._mock_salt + user.encode()).digest()[:16]
            return Verifier(salt, 4096, b"\0" * 32, b"\0" * 32)
        found = self._verifiers.get((user, password))
        if found is None:
            found = self._verifiers[(user, password)] = Verifier.of(password)
        return found

    async def _connect_backend(self, params: dict[str, str]) -> tuple[Pipe, bytes]:
        """Log in to the embedded PostgreSQL: the session and its welcome, with our cancel key."""
        pg = Pipe()
        loop = asyncio.get_running_loop()
        socket_path = self.neon.pg.socket_path
        try:
            if socket_path is not None:
                await loop.create_unix_connection(lambda: pg, str(socket_path))
            else:
                await loop.create_connection(lambda: pg, "127.0.0.1", self.neon.pg.port)
        except OSError:
            raise Refused("08006", "the branch's compute (PostgreSQL) is not reachable") from None
        try:
            pg.write(_startup(params))
            password = internal_password(self.neon.pg.password, params["user"])
            scram: ClientExchange | None = None
            while True:
                kind, body = await pg.message()
                if kind == b"E":
                    raise _Forward(_message(kind, body))
                if kind != b"R":
                    continue  # NegotiateProtocolVersion: we asked for 3.0
                (code,) = struct.unpack_from("!I", body)
                if code == 0:
                    break
                if code == 10:
                    scram = ClientExchange(password)
                    first = scram.first().encode()
                    pg.write(
                        _message(
                            b"p", MECHANISM.encode() + b"\0" + struct.pack("!I", len(first)) + first
                        )
                    )
                elif code == 11 and scram is not None:
                    pg.write(_message(b"p", scram.final(body[4:].decode()).encode()))
                elif code == 12 and scram is not None:
                    scram.check(body[4:].decode())
                else:
                    raise Refused(
                        "XX000", f"unexpected authentication request {code} from PostgreSQL"
                    )
            welcome = bytearray(_auth(0))
            while True:
                kind, body = await pg.message()
                if kind == b"K":
                    pid, real = body[:4], body[4:]
                    ours = secrets.token_bytes(len(real))
                    key = (struct.unpack("!I", pid)[0], ours)
                    self._cancel_keys[key] = real
                    pg.on_close = self._forget(key)
                    body = pid + ours
                welcome += _message(kind, body)
                if kind == b"E":
                    raise _Forward(bytes(welcome))
                if kind == b"Z":
                    break
            return pg, bytes(welcome)
        except BaseException:
            pg.close()
            raise

    def _forget(self, key: tuple[int, bytes]) -> Callable[[], None]:
        def forget() -> None:
            self._cancel_keys.pop(key, None)

        return forget

    async def _cancel(self, packet: bytes) -> None:
        """Pass a cancel request on with the backend's real key (unknown keys: silently, as PG)."""
        pid = struct.unpack_from("!I", packet, 4)[0]
        real = self._cancel_keys.get((pid, packet[8:]))
        if real is None:
            return
        _, writer = await asyncio.open_connection("127.0.0.1", self.neon.pg.port)
        body = struct.pack("!II", CANCEL_REQUEST, pid) + real
        writer.write(struct.pack("!I", len(body) + 4) + body)
        await writer.drain()
        writer.close()


class _Forward(Exception):
    """PostgreSQL's own error: forwarded to the client as it is."""

    def __init__(self, data: bytes) -> None:
        super().__init__("forwarded")
        self.data = data


def _discard(task: asyncio.Future[tuple[Pipe, bytes]]) -> None:
    """Drop a backend login nobody will use (finished, failed or still running)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        task.result()[0].close()


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it installs (its TLS and sockets cost less per message), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _host(address: str, port: int) -> str:
    """The endpoint's ``host`` field: the bare address where the port is PostgreSQL's default."""
    return address if port == NEON_PORT else f"{address}:{port}"


def _split_host(host: str) -> tuple[str, int]:
    address, _, port = host.partition(":")
    return address, int(port) if port.isdigit() else NEON_PORT


def _bind(address: str, port: int, quiet: bool = True) -> socket.socket | None:
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As PostgreSQL does: a restart must not wait out connections left in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        if quiet:
            return None
        raise
    return sock
