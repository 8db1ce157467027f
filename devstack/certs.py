"""One local certificate authority for every HTTPS emulator of the devstack.

The CA lives at ``.devstack/certs/ca.pem`` (created on first use) and signs one server
certificate per emulator for ``127.0.0.1``, ``localhost`` and ``::1``. Clients trust the
local emulators by trusting that one file (``REQUESTS_CA_BUNDLE`` or an explicit
``verify=`` / ``connection_verify=``), never by switching verification off.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CERT_DIR = Path(os.environ.get("DEVSTACK_CERT_DIR", PROJECT_ROOT / ".devstack" / "certs"))


@dataclass(frozen=True)
class ServerCertificate:
    cert_file: Path
    key_file: Path
    ca_file: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)  # atomic: two emulators starting together never see half a file


def ensure_ca(cert_dir: Path = DEFAULT_CERT_DIR) -> tuple[Path, Path]:
    """Return (ca.pem, ca-key.pem), creating the local CA on first use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_file, key_file = cert_dir / "ca.pem", cert_dir / "ca-key.pem"
    if ca_file.exists() and key_file.exists():
        return ca_file, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "m365-connector devstack local CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(ca_file, cert.public_bytes(serialization.Encoding.PEM))
    return ca_file, key_file


def ensure_server_certificate(name: str, cert_dir: Path = DEFAULT_CERT_DIR) -> ServerCertificate:
    """Return a server certificate for loopback, signed by the local CA, named ``name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_file, ca_key_file = ensure_ca(cert_dir)
    cert_file, key_file = cert_dir / f"{name}.pem", cert_dir / f"{name}-key.pem"
    if cert_file.exists() and key_file.exists():
        return ServerCertificate(cert_file, key_file, ca_file)
    ca_cert = x509.load_pem_x509_certificate(ca_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (devstack)")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    _write_private(
        key_file,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return ServerCertificate(cert_file, key_file, ca_file)


def server_ssl_context(name: str, cert_dir: Path = DEFAULT_CERT_DIR):  # type: ignore[no-untyped-def]
    """An ``ssl.SSLContext`` for an emulator's HTTPS listener."""
    import ssl

    cert = ensure_server_certificate(name, cert_dir)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    return ctx
