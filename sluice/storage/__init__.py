"""Object storage behind one interface: local disk by default, S3/MinIO through aioboto3."""

from sluice.storage.base import ObjectStorage, StorageError, StorageKeyError
from sluice.storage.factory import open_storage

__all__ = ["ObjectStorage", "StorageError", "StorageKeyError", "open_storage"]
