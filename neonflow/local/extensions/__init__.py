"""uuid-ossp and pgcrypto for the embedded PostgreSQL, as SQL and PL/pgSQL extensions.

The wheel's PostgreSQL is built without libuuid and OpenSSL, so ``CREATE EXTENSION "uuid-ossp"``
and ``CREATE EXTENSION pgcrypto`` would fail locally while real migrations run them on Neon. These
files give the same names and results for the functions people use; the rest of pgcrypto raises
an error naming the function. They are written into the wheel's extension folder at start.
"""

from __future__ import annotations

from pathlib import Path

from neonflow.local.postgres import bin_dir

HERE = Path(__file__).resolve().parent

# pgcrypto functions not provided here: (name, argument types).
_MISSING = [
    ("encrypt", "bytea, bytea, text"),
    ("decrypt", "bytea, bytea, text"),
    ("encrypt_iv", "bytea, bytea, bytea, text"),
    ("decrypt_iv", "bytea, bytea, bytea, text"),
    ("armor", "bytea"),
    ("dearmor", "text"),
    ("pgp_sym_encrypt", "text, text"),
    ("pgp_sym_encrypt", "text, text, text"),
    ("pgp_sym_encrypt_bytea", "bytea, text"),
    ("pgp_sym_decrypt", "bytea, text"),
    ("pgp_sym_decrypt", "bytea, text, text"),
    ("pgp_sym_decrypt_bytea", "bytea, text"),
    ("pgp_pub_encrypt", "text, bytea"),
    ("pgp_pub_encrypt_bytea", "bytea, bytea"),
    ("pgp_pub_decrypt", "bytea, bytea"),
    ("pgp_pub_decrypt", "bytea, bytea, text"),
    ("pgp_pub_decrypt_bytea", "bytea, bytea"),
    ("pgp_key_id", "bytea"),
]


def _missing() -> str:
    return "".join(
        f"""
CREATE FUNCTION @extschema@.{name}({args}) RETURNS bytea
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '{name}() is not provided by the local Neon''s pgcrypto'
    USING ERRCODE = '0A000', HINT = 'Neon has it; locally only digest, hmac, '
      'gen_random_bytes, gen_random_uuid, crypt and gen_salt (md5) are available.';
END
$$;
"""
        for name, args in _MISSING
    )


def rendered() -> dict[str, str]:
    """File name in the extension folder → its content."""
    sha1 = (HERE / "nf_sha1.sql.inc").read_text()
    out = {}
    for path in sorted(HERE.iterdir()):
        if path.suffix == ".control":
            out[path.name] = path.read_text()
        elif path.name.endswith(".sql.in"):
            text = path.read_text().replace("@SHA1@", sha1).replace("@MISSING@", _missing())
            # Each extension owns its helper: both may live in one schema.
            own = path.name.split("--")[0].replace("-", "_")
            text = text.replace("_nf_sha1", f"_nf_{own}_sha1")
            out[path.name.removesuffix(".in")] = text
    return out


def install(folder: Path | None = None) -> None:
    """Write the extension files where PostgreSQL looks for them (only what changed)."""
    target = folder or bin_dir().parent / "share" / "extension"
    for name, text in rendered().items():
        path = target / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o644)
