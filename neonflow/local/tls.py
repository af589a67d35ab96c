"""The local Neon's certificate authority and its server certificates (in the state folder).

The CA is made once and kept (``tls/ca.crt`` is what users point ``sslrootcert`` at). Each proxy
address gets a certificate of its own, naming that IP address, so ``sslmode=verify-full`` holds
for every endpoint; they share one server key and are re-signed at every start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from neonflow.files import write_private

_CA_DAYS = 3650
_SERVER_DAYS = 397  # the longest validity clients accept for a server certificate


@dataclass(frozen=True)
class ServerTLS:
    """What one listener needs: its TLS context and the channel-binding hash of its certificate."""

    context: ssl.SSLContext
    end_point_hash: bytes  # tls-server-end-point (RFC 5929): SHA-256 of the DER certificate


class Certificates:
    """A CA and a server key under ``folder``, created on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._ca_key, self._ca_cert = self._load_or_create_ca()
        self._key = self._load_or_create_key(folder / "server.key")
        self._contexts: dict[str, ServerTLS] = {}

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def for_address(self, address: str) -> ServerTLS:
        """A context whose certificate names ``address`` (an IP literal); cached."""
        found = self._contexts.get(address)
        if found is not None:
            return found
        cert = self._sign(address)
        der = cert.public_bytes(serialization.Encoding.DER)
        pem = self.folder / f"server-{address}.crt"
        pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # libpq never resumes sessions: tickets would only cost every handshake a write.
        context.num_tickets = 0
        context.options |= ssl.OP_NO_TICKET
        context.load_cert_chain(pem, self.folder / "server.key")
        made = ServerTLS(context, hashlib.sha256(der).digest())
        self._contexts[address] = made
        return made

    # -- making them -----------------------------------------------------------------------

    def _load_or_create_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = self._load_or_create_key(self.folder / "ca.key")
        if self.ca_file.exists():
            cert = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
            if cert.public_key() == key.public_key():
                return key, cert
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "neonflow local Neon CA")])
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return key, cert

    @staticmethod
    def _load_or_create_key(path: Path) -> ec.EllipticCurvePrivateKey:
        if path.exists():
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if isinstance(loaded, ec.EllipticCurvePrivateKey):
                return loaded
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(path, pem.decode())
        return key

    def _sign(self, address: str) -> x509.Certificate:
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        ca_ski = self._ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=_SERVER_DAYS))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(address)), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski.value),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
