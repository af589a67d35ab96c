"""uuid-ossp and pgcrypto on the local Neon (SQL and PL/pgSQL), against known test vectors.

Vectors: RFC 4122 / Python's uuid docs (v3, v5 of python.org in the DNS namespace), FIPS 180 and
RFC 2202/4231-style HMAC examples, and the classic md5-crypt value of "password" with "saltsalt".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from neonflow.local.service import LocalNeonInfo
from tests.local.test_server import create, delete, http, unique

FOX = "The quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def conn(local_neon: LocalNeonInfo) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with http(local_neon) as api:
        created = create(api, name=unique("ext"))
        with psycopg.connect(created["connection_uris"][0]["connection_uri"], autocommit=True) as c:
            c.execute('CREATE EXTENSION "uuid-ossp"')
            c.execute("CREATE EXTENSION pgcrypto")
            yield c
        delete(api, created["branch"]["id"])


def one(conn: psycopg.Connection[tuple[object, ...]], query: str) -> object:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_both_are_available(conn: psycopg.Connection[tuple[object, ...]]):
    rows = conn.execute(
        "SELECT name, installed_version FROM pg_available_extensions "
        "WHERE name IN ('uuid-ossp', 'pgcrypto') ORDER BY name"
    ).fetchall()
    assert rows == [("pgcrypto", "1.3"), ("uuid-ossp", "1.1")]


def test_uuid_ossp_vectors(conn: psycopg.Connection[tuple[object, ...]]):
    assert one(conn, "SELECT uuid_generate_v3(uuid_ns_dns(), 'python.org')") == uuid.UUID(
        "6fa459ea-ee8a-3ca4-894e-db77e160355e"
    )
    assert one(conn, "SELECT uuid_generate_v5(uuid_ns_dns(), 'python.org')") == uuid.UUID(
        "886313e1-3b8a-5372-9b90-0c9aee199e5d"
    )
    assert one(conn, "SELECT uuid_generate_v5(uuid_ns_url(), 'http://python.org/')") == (
        uuid.uuid5(uuid.NAMESPACE_URL, "http://python.org/")
    )
    assert one(conn, "SELECT uuid_nil()") == uuid.UUID(int=0)
    namespaces = conn.execute(
        "SELECT uuid_ns_dns(), uuid_ns_url(), uuid_ns_oid(), uuid_ns_x500()"
    ).fetchone()
    assert namespaces == (
        uuid.NAMESPACE_DNS,
        uuid.NAMESPACE_URL,
        uuid.NAMESPACE_OID,
        uuid.NAMESPACE_X500,
    )
    for function, version in (
        ("uuid_generate_v1", 1),
        ("uuid_generate_v1mc", 1),
        ("uuid_generate_v4", 4),
    ):
        made = one(conn, f"SELECT {function}()")
        assert isinstance(made, uuid.UUID)
        assert (made.version, made.variant) == (version, uuid.RFC_4122)
    mc = one(conn, "SELECT uuid_generate_v1mc()")
    assert isinstance(mc, uuid.UUID) and mc.node & (1 << 40)  # the multicast bit


def test_pgcrypto_digest_and_hmac_vectors(conn: psycopg.Connection[tuple[object, ...]]):
    digests = {
        "md5": "900150983cd24fb0d6963f7d28e17f72",
        "sha1": "a9993e364706816aba3e25717850c26c9cd0d89d",
        "sha224": "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    }
    for kind, expected in digests.items():
        assert one(conn, f"SELECT encode(digest('abc', '{kind}'), 'hex')") == expected
    assert one(conn, "SELECT encode(digest(repeat('a', 1000), 'sha1'), 'hex')") == (
        "291e9a6c66994949b57ba5e650361e98fc36b1ba"
    )
    hmacs = {
        "md5": "80070713463e7749b90c2dc24911e275",
        "sha1": "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9",
        "sha256": "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
    }
    for kind, expected in hmacs.items():
        assert one(conn, f"SELECT encode(hmac('{FOX}', 'key', '{kind}'), 'hex')") == expected
    with pytest.raises(errors.ExternalRoutineInvocationException, match="No such hash algorithm"):
        conn.execute("SELECT digest('abc', 'whirlpool')")


def test_pgcrypto_crypt_random_and_what_is_missing(conn: psycopg.Connection[tuple[object, ...]]):
    assert one(conn, "SELECT crypt('password', '$1$saltsalt$')") == (
        "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"
    )
    assert one(conn, "SELECT crypt('', '$1$$')") == "$1$$qRPK7m23GJusamGpoGLby/"
    hashed = one(conn, "SELECT crypt('secret', gen_salt('md5'))")
    assert isinstance(hashed, str) and hashed.startswith("$1$")
    assert one(conn, f"SELECT crypt('secret', '{hashed}') = '{hashed}'") is True
    assert one(conn, f"SELECT crypt('wrong', '{hashed}') = '{hashed}'") is False
    assert one(conn, "SELECT length(gen_random_bytes(1024))") == 1024
    assert one(conn, "SELECT gen_random_bytes(16) <> gen_random_bytes(16)") is True
    made = one(conn, "SELECT gen_random_uuid()")
    assert isinstance(made, uuid.UUID) and made.version == 4
    with pytest.raises(errors.FeatureNotSupported, match=r"gen_salt\('bf'\) is not provided"):
        conn.execute("SELECT crypt('x', gen_salt('bf'))")
    with pytest.raises(errors.FeatureNotSupported, match=r"pgp_sym_encrypt\(\) is not provided"):
        conn.execute("SELECT pgp_sym_encrypt('data', 'key')")
