"""PostgreSQL's wire protocol as the front door speaks it: codes, message framing, refusals.

What both sides of the proxy need to build and read messages: the request codes of the packets
without a type byte (``SSLRequest``, ``CancelRequest``, ``StartupMessage``), typed messages, the
authentication requests, the startup packet's parameters, and ``Refused``, PostgreSQL's
``FATAL`` error that ends a session before it is piped.
"""

from __future__ import annotations

import struct

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 3 << 16
MAX_STARTUP = 10_000


class Refused(Exception):
    """A session refused with PostgreSQL's ``FATAL`` error (SQLSTATE ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_message(code: str, message: str, severity: str = "FATAL") -> bytes:
    """An ``ErrorResponse`` with PostgreSQL's fields: severity (both forms), SQLSTATE, text."""
    fields = b"".join(
        tag + value.encode() + b"\0"
        for tag, value in ((b"S", severity), (b"V", severity), (b"C", code), (b"M", message))
    )
    return frame(b"E", fields + b"\0")


def frame(kind: bytes, body: bytes) -> bytes:
    """A typed message: its type byte, its length, its body."""
    return kind + struct.pack("!I", len(body) + 4) + body


def auth(code: int, data: bytes = b"") -> bytes:
    """An ``Authentication*`` request (0 ok, 10 SASL, 11 SASL continue, 12 SASL final)."""
    return frame(b"R", struct.pack("!I", code) + data)


def parse_startup(body: bytes) -> dict[str, str]:
    """The parameters of a ``StartupMessage`` (its body after the length, code first)."""
    parts = body[4:].split(b"\0")
    params: dict[str, str] = {}
    for key, value in zip(parts[0::2], parts[1::2], strict=False):
        if key:
            params[key.decode(errors="replace")] = value.decode(errors="replace")
    return params


def startup(params: dict[str, str]) -> bytes:
    """A protocol 3.0 ``StartupMessage`` with ``params``."""
    body = struct.pack("!I", PROTOCOL_3_0)
    body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items()) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def cancel_request(pid: int, key: bytes) -> bytes:
    """A ``CancelRequest`` for the backend ``pid`` with its secret ``key``."""
    body = struct.pack("!II", CANCEL_REQUEST, pid) + key
    return struct.pack("!I", len(body) + 4) + body
