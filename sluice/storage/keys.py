"""Key rules shared by all backends and by the API's path checks."""

from __future__ import annotations

SIDECAR_SUFFIX = ".meta.json"
INTERNAL_ROOT = "_sluice"


def validate_key(key: str) -> str:
    # Every stored object is checked (twice on a replay): the valid case is one expression, with
    # no import and no split; the error is worked out only for a bad key.
    if isinstance(key, str) and key and key[0] != "/" and "\\" not in key and "\x00" not in key:
        framed = f"/{key}/"
        if "//" not in framed and "/./" not in framed and "/../" not in framed:
            return key
    if not isinstance(key, str) or not key:
        raise _key_error("empty object key")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise _key_error(f"invalid object key {key!r}")
    raise _key_error(f"object key {key!r} has an empty, '.' or '..' segment")


def validate_relative_path(path: str, what: str = "path") -> str:
    """A user-supplied path inside an execution's prefix: no '..', no absolute path."""
    cleaned = path.strip()
    if cleaned.startswith("/") or "\\" in cleaned or "\x00" in cleaned:
        raise _key_error(f"{what} {path!r} must be a relative path")
    framed = f"/{cleaned}/"
    if "/./" in framed or "/../" in framed:
        raise _key_error(f"{what} {path!r} must not contain '.' or '..' segments")
    if "//" not in framed:
        return cleaned  # already normal: every emitted object's path takes this way
    return "/".join(p for p in cleaned.split("/") if p != "")


def stage_prefix(execution_id: str, stage: str, path: str | None = None) -> str:
    stage = validate_relative_path(stage, "stage")
    prefix = f"{execution_id}/{stage}/"
    if path:
        sub = validate_relative_path(path, "path")
        if sub:
            prefix += sub
    return prefix


def object_key(execution_id: str, stage: str, path: str) -> str:
    stage = validate_relative_path(stage, "stage")
    rel = validate_relative_path(path, "path")
    if not rel:
        raise _key_error("empty object path")
    return validate_key(f"{execution_id}/{stage}/{rel}")


def sidecar_key(key: str) -> str:
    return key + SIDECAR_SUFFIX


def is_sidecar(key: str) -> bool:
    return key.endswith(SIDECAR_SUFFIX)


def _key_error(message: str) -> Exception:
    # Imported when raising, not per call: every stored object's key and path are checked here.
    from sluice.storage.base import StorageKeyError  # base imports this module

    return StorageKeyError(message)
