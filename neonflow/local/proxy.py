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

This module holds the ``Proxy``: its listeners and their addresses, and a session's handshake
and routing. The pieces it puts together live beside it: ``wire`` (protocol messages),
``relay`` (``Pipe`` and the read-only filters), ``frontdoor_auth`` (SCRAM with the client) and
``backends`` (the login to PostgreSQL, cancel keys).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import ipaddress
import logging
import re
import socket
import ssl
import struct
import threading
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import sql

from neonflow.local import records
from neonflow.local.backends import Backends, Forward, discard
from neonflow.local.frontdoor_auth import ClientAuth
from neonflow.local.relay import READ_ONLY_CLIENT, READ_ONLY_SERVER, Pipe, new_loop
from neonflow.local.scram import internal_password
from neonflow.local.tls import Certificates, ServerTLS
from neonflow.local.wire import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    PROTOCOL_3_0,
    SSL_REQUEST,
    Refused,
    error_message,
    frame,
    parse_startup,
)

if TYPE_CHECKING:
    from neonflow.local.engine import LocalNeon

log = logging.getLogger("neonflow.local.proxy")

NEON_PORT = 5432
_INSECURE = "connection is insecure (try using `sslmode=require`)"
_ROUTING = re.compile(r"(?:^|\s)(endpoint|project)=(\S*)")


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
        self.backends = Backends(neon)
        self.auth = ClientAuth()
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
            await self.backends.cancel(packet)
            return None
        if not secure:
            raise Refused("28000", _INSECURE)
        if code >> 16 != 3:
            raise Refused("0A000", f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
        params = parse_startup(packet)
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
            client.write(frame(b"v", body))

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
            early = asyncio.ensure_future(self.backends.connect(backend))
        try:
            await self.auth.authenticate(client, tls, user, password)
            if early is None:
                raise Refused("3D000", f'database "{database}" does not exist')
            try:
                pg, welcome = await early
            except Forward as fwd:
                client.write(fwd.data)
                raise ConnectionResetError("PostgreSQL refused the session") from None
        except BaseException:
            if early is not None:
                discard(early)
            raise
        client.write(welcome)
        if read_only:
            client.filter, pg.filter = READ_ONLY_CLIENT, READ_ONLY_SERVER
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
            role = records.roles(store, branch).get(user)
            physical = next(
                (d["physical"] for d in branch["_databases"] if d["name"] == database), None
            )
            read_only = endpoint["type"] == "read_only"
            password = role["password"] if role and not role.get("no_login") else None
            return password, physical, read_only


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
