"""Throwaway certificates for the tests, with the dates a test needs: generated here with the
cryptography package (Ansible's own dependency), no CA and no lab."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)


def certificate(
    name: str, not_after: datetime.datetime, not_before: datetime.datetime | None = None
) -> bytes:
    """A self-signed PEM certificate for CN=name, valid until not_after."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or not_after - datetime.timedelta(days=365)
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return built.public_bytes(serialization.Encoding.PEM)


def write(path: Path, *pems: bytes) -> str:
    """The certificates in one PEM file at path; its path as a string."""
    path.write_bytes(b"".join(pems))
    return str(path)


def expiring_in(days: float, now: datetime.datetime = NOW) -> datetime.datetime:
    return now + datetime.timedelta(days=days)
