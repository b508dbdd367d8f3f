"""`coinfer certs init DIR`: a private CA and the certificates a deployment needs, with `cryptography`.

Written into DIR (PEM; private keys readable by the owner only):

* ``ca.pem`` / ``ca.key``: the certificate authority every daemon and client trusts;
* ``server.pem`` / ``server.key``: the daemons' certificate (coordinator and edges), valid for
  ``localhost``, ``127.0.0.1``, ``::1`` and every ``--host`` given; it may also act as a client
  (the coordinator calls edges, edges call the coordinator), so mutual TLS works both ways;
* ``client.pem`` / ``client.key``: a client certificate for users of the front doors.

Keys are ECDSA P-256, certificates SHA-256 signed. Nothing is replaced unless asked, and the
files appear together or not at all (written into a temporary folder, then moved).

    coinfer certs init certs/ --host nano-1.local --host 10.0.0.5
    coinfer serve ... --tls-cert certs/server.pem --tls-key certs/server.key --tls-client-ca certs/ca.pem --edge-ca certs/ca.pem
    coinfer edge  ... --tls-cert certs/server.pem --tls-key certs/server.key --tls-client-ca certs/ca.pem --coordinator-ca certs/ca.pem
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from coinfer.core.errors import FailedPrecondition, InvalidInput

FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertPaths:
    """Where `init_certs` wrote everything."""

    directory: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _subject_alt_names(hosts: Sequence[str]):
    from cryptography import x509

    names = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise InvalidInput(f"--host {host!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def init_certs(directory: str | Path, hosts: Sequence[str] = (), days: int = 365, overwrite: bool = False) -> CertPaths:
    """Create a CA and the daemon and client certificates in ``directory``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if days < 1:
        raise InvalidInput(f"--days must be at least 1, got {days}")
    directory = Path(directory)
    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not overwrite:
        raise FailedPrecondition(f"{directory} already holds {', '.join(existing)}; pass --overwrite to replace them")
    san = _subject_alt_names([*DEFAULT_HOSTS, *hosts])
    now = dt.datetime.now(dt.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "coinfer"), x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject, key, issuer, issuer_key, *, ca: bool, usages=(), alt=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock differences
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
                    key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        if alt is not None:
            builder = builder.add_extension(alt, critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("coinfer CA")
    ca = issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue(
        name("coinfer daemon"), server_key, ca_name, ca_key, ca=False,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH), alt=san,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue(name("coinfer client"), client_key, ca_name, ca_key, ca=False, usages=(ExtendedKeyUsageOID.CLIENT_AUTH,))

    def pem_cert(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

    contents = {
        "ca.pem": pem_cert(ca), "ca.key": pem_key(ca_key),
        "server.pem": pem_cert(server), "server.key": pem_key(server_key),
        "client.pem": pem_cert(client), "client.key": pem_key(client_key),
    }
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".certs-", dir=directory))
    try:
        for file_name, data in contents.items():
            path = staging / file_name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if file_name.endswith(".key") else 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        for file_name in contents:
            os.replace(staging / file_name, directory / file_name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CertPaths(
        directory, directory / "ca.pem", directory / "server.pem", directory / "server.key", directory / "client.pem", directory / "client.key"
    )
