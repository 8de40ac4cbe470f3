"""Pick a backend from SLUICE_STORAGE_URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from sluice.settings import Settings
from sluice.storage.base import ObjectStorage, StorageError


def open_storage(settings: Settings, url: str | None = None) -> ObjectStorage:
    url = url or settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from sluice.storage.local import LocalStorage

        path = unquote(parsed.path) if parsed.scheme == "file" else url
        return LocalStorage(Path(path))
    if parsed.scheme == "s3":
        from sluice.storage.s3 import S3Storage

        if not parsed.netloc:
            raise StorageError(f"storage URL {url!r} names no bucket (use s3://bucket/prefix)")
        return S3Storage(
            bucket=parsed.netloc,
            prefix=parsed.path.lstrip("/"),
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
            ),
        )
    raise StorageError(f"unsupported storage URL {url!r}: use file:///path or s3://bucket/prefix")
