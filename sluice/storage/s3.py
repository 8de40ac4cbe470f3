"""S3 (and S3-compatible) storage through aioboto3.

One session and one lazily opened client per instance: opening a client builds a connection pool,
so doing it per call would cost a TLS handshake per object.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sluice.storage.base import ObjectNotFoundError, ObjectStorage, StorageError
from sluice.storage.keys import is_sidecar

_NOT_FOUND = frozenset({"NoSuchKey", "NotFound", "404"})


class S3Storage(ObjectStorage):
    """Objects at s3://bucket/prefix/key; keys are handed to callers without the prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        max_pool_connections: int = 64,
    ):
        if not bucket:
            raise StorageError("S3 storage needs a bucket")
        if bool(access_key_id) != bool(secret_access_key):
            raise StorageError("set both the S3 access key id and the secret access key, or neither")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix.rstrip('/')}".rstrip("/")
        self.endpoint_url = endpoint_url
        # Without explicit keys the session falls back to boto's chain (env, profile, instance role).
        self._session = aioboto3.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region or None,
        )
        self._config = Config(
            # S3-compatible servers behind a custom endpoint rarely support virtual-host buckets.
            s3={"addressing_style": "path"} if endpoint_url else None,
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=max_pool_connections,
            connect_timeout=10,
            read_timeout=60,
        )
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:  # never show credentials
        return f"S3Storage({self.url!r}, endpoint_url={self.endpoint_url!r})"

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = contextlib.AsyncExitStack()
                    try:
                        client = await stack.enter_async_context(
                            self._session.client("s3", endpoint_url=self.endpoint_url, config=self._config)
                        )
                    except (BotoCoreError, ValueError) as exc:
                        await stack.aclose()
                        raise StorageError(f"cannot open S3 client for {self.url}: {exc}") from exc
                    self._stack, self._client = stack, client
        return self._client

    async def close(self) -> None:
        async with self._lock:
            stack, self._stack, self._client = self._stack, None, None
            if stack is not None:
                await stack.aclose()

    def _full_key(self, key: str) -> str:
        return self.prefix + self.check_key(key)

    def _fail(self, action: str, key: str, exc: Exception) -> NoReturn:
        # botocore errors name the operation, code and message; they never carry the secret key.
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{err.get('Code', 'unknown')} (HTTP {status})"
            if err.get("Message"):
                detail += f": {err['Message']}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        raise StorageError(f"S3 {action} s3://{self.bucket}/{key} failed: {detail}") from exc

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            await s3.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            self._fail("put", full, exc)

    async def delete_prefix(self, prefix: str) -> int:
        """DeleteObjects, 1,000 keys per call."""
        s3 = await self._s3()
        deleted, batch = 0, []

        async def flush() -> None:
            nonlocal deleted, batch
            if not batch:
                return
            try:
                await s3.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self._full_key(k)} for k in batch], "Quiet": True},
                )
            except (ClientError, BotoCoreError) as exc:
                self._fail("delete", prefix, exc)
            deleted += sum(1 for key in batch if not is_sidecar(key))
            batch = []

        async for key in self.list(prefix):
            batch.append(key)
            if len(batch) >= 1000:
                await flush()
        await flush()
        return deleted

    async def copy(self, source: str, target: str, content_type: str = "application/octet-stream") -> None:
        """Server-side copy: the bytes never pass through the worker."""
        src, dst = self._full_key(source), self._full_key(target)
        s3 = await self._s3()
        try:
            await s3.copy_object(Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src})
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(source) from None
            self._fail("copy", src, exc)
        except BotoCoreError as exc:
            self._fail("copy", src, exc)

    async def get(self, key: str) -> bytes:
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=full)
            async with resp["Body"] as body:
                return await body.read()
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            self._fail("get", full, exc)
        except BotoCoreError as exc:
            self._fail("get", full, exc)

    async def get_range(self, key: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            resp = await s3.get_object(
                Bucket=self.bucket, Key=full, Range=f"bytes={start}-{start + length - 1}"
            )
            async with resp["Body"] as body:
                return await body.read()
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            if code == "InvalidRange":
                return b""
            self._fail("get", full, exc)
        except BotoCoreError as exc:
            self._fail("get", full, exc)

    async def size(self, key: str) -> int:
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            return int((await s3.head_object(Bucket=self.bucket, Key=full))["ContentLength"])
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFoundError(key) from None
            self._fail("head", full, exc)
        except BotoCoreError as exc:
            self._fail("head", full, exc)

    async def exists(self, key: str) -> bool:
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            await s3.head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            # HEAD has no body, so a missing key only shows as a bare 404 code.
            if _error_code(exc) in _NOT_FOUND:
                return False
            self._fail("head", full, exc)
        except BotoCoreError as exc:
            self._fail("head", full, exc)
        return True

    async def delete(self, key: str) -> None:
        full = self._full_key(key)
        s3 = await self._s3()
        try:
            await s3.delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            self._fail("delete", full, exc)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        async for page in self._listing(prefix):
            for key in page:
                yield key

    async def list_proven_pages(self, prefix: str) -> AsyncIterator[list[tuple[str, bool]]]:
        async for page in self._listing(prefix):
            yield [(key, True) for key in page]

    async def _listing(self, prefix: str) -> AsyncIterator[list[str]]:
        """The keys under prefix, one listing page (<= 1000 keys) at a time; botocore url-decodes
        the keys it asks for."""
        full_prefix = self.prefix + prefix
        s3 = await self._s3()
        cut = len(self.prefix)
        try:
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full_prefix
            ):
                if keys := [obj["Key"][cut:] for obj in page.get("Contents", ())]:
                    yield keys
        except (ClientError, BotoCoreError) as exc:
            self._fail("list", full_prefix + "*", exc)

    async def create_bucket_if_missing(self) -> bool:
        """For tests and dev setups only: normal operations never create buckets. True if created."""
        s3 = await self._s3()
        try:
            await s3.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                self._fail("head bucket", "", exc)
        region = s3.meta.region_name
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region not in ("us-east-1", "aws-global"):
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await s3.create_bucket(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            self._fail("create bucket", "", exc)
        return True


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
