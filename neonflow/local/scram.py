"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both sides.

The proxy is the server to clients (with channel binding ``tls-server-end-point``, RFC 5929) and a
client to the embedded PostgreSQL. Passwords are the ones the local Neon generates (ASCII), for
which SASLprep changes nothing, so it is not applied.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache

ITERATIONS = 4096  # PostgreSQL's default scram_iterations
MECHANISM = "SCRAM-SHA-256"
MECHANISM_PLUS = "SCRAM-SHA-256-PLUS"
CHANNEL_BINDING = "tls-server-end-point"


class ScramError(Exception):
    """The exchange failed: a wrong password, or a malformed or inconsistent message."""


def internal_password(secret: str, role: str) -> str:
    """The password the proxy uses for ``role`` on the embedded PostgreSQL (never the API's)."""
    digest = hmac.new(secret.encode(), b"neonflow-role:" + role.encode(), hashlib.sha256)
    return digest.hexdigest()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


@lru_cache(maxsize=256)
def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """Hi() of RFC 5802: the costly step, cached as PostgreSQL's salt for a role stays put."""
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)


@dataclass(frozen=True)
class Verifier:
    """What a server keeps of a password (PostgreSQL's ``SCRAM-SHA-256$…`` entry)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def of(cls, password: str, salt: bytes | None = None) -> Verifier:
        salt = salt if salt is not None else secrets.token_bytes(16)
        salted = salted_password(password, salt, ITERATIONS)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt, ITERATIONS, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )


def _attributes(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        key, eq, value = part.partition("=")
        if not eq or len(key) != 1:
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        out[key] = value
    return out


class ServerExchange:
    """The server's side: ``first`` answers client-first, ``final`` checks client-final."""

    def __init__(self, verifier: Verifier, mechanism: str, end_point_hash: bytes | None) -> None:
        self.verifier = verifier
        self.mechanism = mechanism
        self.end_point_hash = end_point_hash
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""

    def first(self, client_first: str) -> str:
        gs2_flag, _, rest = client_first.partition(",")
        authzid, _, bare = rest.partition(",")
        if authzid:
            raise ScramError("SCRAM authorization identities are not supported")
        if self.mechanism == MECHANISM_PLUS:
            if gs2_flag != f"p={CHANNEL_BINDING}":
                raise ScramError("SCRAM-SHA-256-PLUS needs channel binding tls-server-end-point")
        elif gs2_flag == "y" and self.end_point_hash is not None:
            # The client could bind but believes we cannot: someone stripped the -PLUS offer.
            raise ScramError("SCRAM channel binding negotiation failed (downgrade)")
        elif gs2_flag not in ("n", "y"):
            raise ScramError("channel binding requested without SCRAM-SHA-256-PLUS")
        self._gs2_header = f"{gs2_flag},{authzid},"
        attrs = _attributes(bare)
        client_nonce = attrs.get("r", "")
        if not client_nonce:
            raise ScramError("SCRAM client-first-message without a nonce")
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.verifier.iterations}"
        return self._server_first

    def final(self, client_final: str) -> str:
        """Check the proof; returns server-final (``v=…``) or raises ScramError."""
        without_proof, sep, proof_part = client_final.rpartition(",p=")
        if not sep:
            raise ScramError("SCRAM client-final-message without a proof")
        attrs = _attributes(without_proof)
        binding = self._gs2_header.encode()
        if self.mechanism == MECHANISM_PLUS:
            assert self.end_point_hash is not None
            binding += self.end_point_hash
        if attrs.get("c") != base64.b64encode(binding).decode():
            raise ScramError("SCRAM channel binding check failed")
        if attrs.get("r") != self._nonce:
            raise ScramError("SCRAM nonce mismatch")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("malformed SCRAM proof") from None
        signature = _hmac(self.verifier.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("malformed SCRAM proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise ScramError("wrong password")
        server_signature = _hmac(self.verifier.server_key, auth_message)
        return "v=" + base64.b64encode(server_signature).decode()


class ClientExchange:
    """The client's side, without channel binding (the embedded PostgreSQL has no TLS)."""

    def __init__(self, password: str) -> None:
        self.password = password
        self._nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = f"n=,r={self._nonce}"
        self._server_signature = b""

    def first(self) -> str:
        return "n,," + self._first_bare

    def final(self, server_first: str) -> str:
        attrs = _attributes(server_first)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or not salt or not iterations.isdigit():
            raise ScramError("malformed SCRAM server-first-message")
        salted = salted_password(self.password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"  # biws = base64("n,,")
        auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def check(self, server_final: str) -> None:
        if _attributes(server_final).get("v") != base64.b64encode(self._server_signature).decode():
            raise ScramError("the server's SCRAM signature does not match")
