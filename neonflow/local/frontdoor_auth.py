"""The front door's SCRAM with the client, against the role's API password.

SCRAM-SHA-256 or SCRAM-SHA-256-PLUS (``tls-server-end-point``, bound to the endpoint's
certificate). The role's keys are derived once per password and kept; a role that does not exist
goes through the same steps with keys of the same shape and cost, and fails last, as PostgreSQL's
mock authentication does, so a probe learns nothing about role names.
"""

from __future__ import annotations

import hashlib
import secrets

from neonflow.local.relay import Pipe
from neonflow.local.scram import MECHANISM, MECHANISM_PLUS, ScramError, ServerExchange, Verifier
from neonflow.local.tls import ServerTLS
from neonflow.local.wire import Refused, auth


class ClientAuth:
    """Authenticates clients; holds the derived keys of the passwords seen so far."""

    def __init__(self) -> None:
        self._verifiers: dict[tuple[str, str], Verifier] = {}
        self._mock_salt = secrets.token_bytes(16)

    async def authenticate(
        self, client: Pipe, tls: ServerTLS, user: str, password: str | None
    ) -> None:
        """SCRAM with the client; an unknown role goes through the same steps and fails last."""
        verifier = self._verifier(user, password)
        client.write(auth(10, f"{MECHANISM_PLUS}\0{MECHANISM}\0\0".encode()))
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
            client.write(auth(11, server_first.encode()))
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
        client.write(auth(12, server_final.encode()))

    def _verifier(self, user: str, password: str | None) -> Verifier:
        if password is None:
            # Same shape and cost as a real role, so a probe learns nothing about role names.
            salt = hashlib.sha256(self._mock_salt + user.encode()).digest()[:16]
            return Verifier(salt, 4096, b"\0" * 32, b"\0" * 32)
        found = self._verifiers.get((user, password))
        if found is None:
            found = self._verifiers[(user, password)] = Verifier.of(password)
        return found
