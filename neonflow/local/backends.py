"""The front door's side toward the embedded PostgreSQL: backend logins and cancel keys.

The proxy logs in to PostgreSQL as the client's role with the role's internal password (the API
password does not open PostgreSQL), over the private Unix socket where there is one. The
client's cancel key is the proxy's own, mapped to the backend's real one until the backend's
connection closes; a ``CancelRequest`` with a key the proxy did not hand out goes nowhere.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from neonflow.local.relay import Pipe
from neonflow.local.scram import MECHANISM, ClientExchange, internal_password
from neonflow.local.wire import Refused, auth, cancel_request, frame, startup

if TYPE_CHECKING:
    from neonflow.local.engine import LocalNeon


class Forward(Exception):
    """PostgreSQL's own error: forwarded to the client as it is."""

    def __init__(self, data: bytes) -> None:
        super().__init__("forwarded")
        self.data = data


class Backends:
    """Logs in to the local Neon's embedded PostgreSQL and passes cancel requests on to it."""

    def __init__(self, neon: LocalNeon) -> None:
        self.neon = neon
        self._cancel_keys: dict[tuple[int, bytes], bytes] = {}

    async def connect(self, params: dict[str, str]) -> tuple[Pipe, bytes]:
        """Log in to the embedded PostgreSQL: the session and its welcome, with our cancel key.

        PostgreSQL's refusal (a database gone, too many connections) raises ``Forward``.
        """
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
            pg.write(startup(params))
            await self._login(pg, internal_password(self.neon.pg.password, params["user"]))
            return pg, await self._welcome(pg)
        except BaseException:
            pg.close()
            raise

    @staticmethod
    async def _login(pg: Pipe, password: str) -> None:
        scram: ClientExchange | None = None
        while True:
            kind, body = await pg.message()
            if kind == b"E":
                raise Forward(frame(kind, body))
            if kind != b"R":
                continue  # NegotiateProtocolVersion: we asked for 3.0
            (code,) = struct.unpack_from("!I", body)
            if code == 0:
                return
            if code == 10:
                scram = ClientExchange(password)
                first = scram.first().encode()
                pg.write(
                    frame(b"p", MECHANISM.encode() + b"\0" + struct.pack("!I", len(first)) + first)
                )
            elif code == 11 and scram is not None:
                pg.write(frame(b"p", scram.final(body[4:].decode()).encode()))
            elif code == 12 and scram is not None:
                scram.check(body[4:].decode())
            else:
                raise Refused("XX000", f"unexpected authentication request {code} from PostgreSQL")

    async def _welcome(self, pg: Pipe) -> bytes:
        """What follows the login up to ``ReadyForQuery``, with the backend's key swapped."""
        welcome = bytearray(auth(0))
        while True:
            kind, body = await pg.message()
            if kind == b"K":
                pid, real = body[:4], body[4:]
                ours = secrets.token_bytes(len(real))
                key = (struct.unpack("!I", pid)[0], ours)
                self._cancel_keys[key] = real
                pg.on_close = self._forget(key)
                body = pid + ours
            welcome += frame(kind, body)
            if kind == b"E":
                raise Forward(bytes(welcome))
            if kind == b"Z":
                return bytes(welcome)

    def _forget(self, key: tuple[int, bytes]) -> Callable[[], None]:
        def forget() -> None:
            self._cancel_keys.pop(key, None)

        return forget

    async def cancel(self, packet: bytes) -> None:
        """Pass a cancel request on with the backend's real key (unknown keys: silently, as PG)."""
        pid = struct.unpack_from("!I", packet, 4)[0]
        real = self._cancel_keys.get((pid, packet[8:]))
        if real is None:
            return
        _, writer = await asyncio.open_connection("127.0.0.1", self.neon.pg.port)
        writer.write(cancel_request(pid, real))
        await writer.drain()
        writer.close()


def discard(task: asyncio.Future[tuple[Pipe, bytes]]) -> None:
    """Drop a backend login nobody will use (finished, failed or still running)."""
    if not task.done():
        task.cancel()
    elif not task.cancelled() and task.exception() is None:
        task.result()[0].close()
