"""Connections out are secure too: Sluice reaches Temporal over TLS and mTLS.

The dev server speaks plaintext only, so a TLS-terminating proxy (Python's ssl, HTTP/2 over ALPN)
sits in front of it with certificates made by the test: the client side is the real thing. A
Temporal Cloud API key cannot be checked here (no server verifies it); the test checks it reaches
the client's connection settings and is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from sluice.settings import Settings
from sluice.temporal import connect, tls_config


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key_and_cert(
    folder: Path, name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *, ca: bool = False
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey, Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return subject, key, cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_name, ca_key, ca_cert, _ = _key_and_cert(folder, "ca", None, ca=True)
    _, _, server_cert, server_key = _key_and_cert(folder, "server", (ca_name, ca_key))
    _, _, client_cert, client_key = _key_and_cert(folder, "client", (ca_name, ca_key))
    _, _, other_ca, _ = _key_and_cert(folder, "other-ca", None, ca=True)
    return Pki(ca_cert, server_cert, server_key, client_cert, client_key, other_ca)


@contextlib.asynccontextmanager
async def tls_proxy(pki: Pki, upstream: str, *, require_client_cert: bool) -> AsyncIterator[int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    context.set_alpn_protocols(["h2"])
    if require_client_cert:
        context.load_verify_locations(pki.ca)
        context.verify_mode = ssl.CERT_REQUIRED
    host, port = upstream.rsplit(":", 1)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def system_info(settings: Settings) -> str:
    client = await asyncio.wait_for(connect(settings), 20)
    info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
    return info.server_version


async def test_tls_and_mtls_to_temporal(pki: Pki, temporal_address: str) -> None:
    async with tls_proxy(pki, temporal_address, require_client_cert=False) as port:
        tls = Settings(
            temporal_address=f"127.0.0.1:{port}",
            temporal_tls=True,
            temporal_tls_ca_file=pki.ca,
            temporal_tls_server_name="localhost",
        )
        assert await system_info(tls)
        plaintext = Settings(temporal_address=f"127.0.0.1:{port}")
        with pytest.raises(ConnectionError):
            await system_info(plaintext)
        untrusted = tls.model_copy(update={"temporal_tls_ca_file": pki.other_ca})
        with pytest.raises(ConnectionError):
            await system_info(untrusted)

    async with tls_proxy(pki, temporal_address, require_client_cert=True) as port:
        mtls = Settings(
            temporal_address=f"127.0.0.1:{port}",
            temporal_tls_ca_file=pki.ca,
            temporal_tls_cert_file=pki.client_cert,
            temporal_tls_key_file=pki.client_key,
            temporal_tls_server_name="localhost",
        )
        assert await system_info(mtls)
        no_client_cert = mtls.model_copy(
            update={"temporal_tls_cert_file": None, "temporal_tls_key_file": None}
        )
        with pytest.raises(ConnectionError):
            await system_info(no_client_cert)


def test_tls_settings_are_checked_and_secrets_stay_secret(pki: Pki) -> None:
    assert tls_config(Settings()) is False  # the dev server: plaintext
    half = Settings(temporal_tls_cert_file=pki.client_cert)
    with pytest.raises(ValueError, match="both"):
        tls_config(half)
    cloud = Settings(
        temporal_api_key="tc-secret-key",
        database_url="postgresql://u:db-password@h/db",
        s3_secret_access_key="s3-secret",
    )
    assert tls_config(cloud) is not False  # an API key implies TLS (Temporal Cloud)
    shown = f"{cloud!r} {cloud} {cloud.model_dump()}"
    for secret in ("tc-secret-key", "db-password", "s3-secret"):
        assert secret not in shown
