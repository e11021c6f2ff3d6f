"""Asset files through fsspec: a local directory by default, any fsspec URL (s3://…, memory://…) by configuration.

Keys are `tenant/generation_id/name` (a generation's outputs) or `tenant/uploads/name`. A store belongs to
one region; `sign`/`verify` make expiring links (HMAC-SHA256 over key and expiry) so a browser can fetch a
file without the tenant's key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable
from typing import Any

import fsspec

_KEY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class AssetNotFound(LookupError):
    pass


def asset_key(tenant: str, generation_id: str, name: str) -> str:
    key = f"{tenant}/{generation_id}/{name}"
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"asset key must be plain path parts, got {key!r}")
    return key


UPLOADS = "uploads"  # `tenant/uploads/name`: a tenant's own files; every other `tenant/id/name` is a generation's


def generation_of(key: str) -> tuple[str, str] | None:
    """(tenant, generation id) whose output `key` is, or None for an upload: a generation's files live and die
    with its record (a deleted generation's are removed, and refused if one is left)."""
    parts = key.split("/")
    if len(parts) == 3 and parts[1] != UPLOADS:
        return parts[0], parts[1]
    return None


class AssetStore:
    def __init__(self, url: str, region: str | None = None, **storage_options: Any):
        self.url = url.rstrip("/")
        self.region = region
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)

    def _path(self, key: str) -> str:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"bad asset key {key!r}")
        return f"{self.root}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Write atomically where the filesystem allows (temp name, then move); returns the key."""
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.part"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)
        return key

    def put_for(self, regions: list[str] | None, key: str, data: bytes) -> str:
        """Store a tenant's file (an upload, a fetched keyframe) where the tenant may keep files: one store here."""
        return self.put(key, data)

    def get(self, key: str) -> bytes:
        try:
            with self.fs.open(self._path(key), "rb") as f:
                return bytes(f.read())
        except FileNotFoundError as err:
            raise AssetNotFound(key) from err

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def delete_generation(self, tenant: str, generation_id: str) -> None:
        """Remove a generation's files (its video, image, thumbnail, progress previews), wherever they are."""
        self.delete_prefix(asset_key(tenant, generation_id, "-").rsplit("/", 1)[0])

    def keys(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if not self.fs.exists(base):
            return []
        root = self.root.rstrip("/") + "/"
        return sorted(p.split(root, 1)[-1] for p in self.fs.find(base))


class RegionalAssets(AssetStore):
    """A home store that writes (a region's, for its workers; the default one, for the server) and reads from
    every store it knows, home first: a file is found wherever its region put it, and written only at home."""

    def __init__(
        self,
        url: str,
        region: str | None = None,
        others: dict[str | None, str] | None = None,
        locate: Callable[[str], str] | None = None,
    ):
        """`locate(region)`: the URL of a region's store (config.region_assets_url), for a tenant's own files."""
        super().__init__(url, region)
        self.locate = locate
        self.others: dict[str | None, AssetStore] = {}
        for other_region, other_url in (others or {}).items():
            self.add(other_region, other_url)

    def add(self, region: str | None, url: str) -> None:
        """Another region's store to read from (a region that joined the cluster)."""
        if url.rstrip("/") != self.url and region not in self.others:
            self.others[region] = AssetStore(url, region)

    def put_for(self, regions: list[str] | None, key: str, data: bytes) -> str:
        """A tenant bound to regions keeps its uploads and fetched keyframes in its first region's store (where
        that region's workers read them), never in the server's own store unless that is one of its regions."""
        if not regions or self.region in regions:
            return self.put(key, data)
        region = next((r for r in regions if r in self.others), regions[0])
        if region not in self.others:
            if self.locate is None:
                raise ValueError(f"no store is known for region {region!r}")
            self.add(region, self.locate(region))
        return AssetStore.put(self.others[region], key, data)

    def _stores(self) -> list[AssetStore]:
        return [self, *list(self.others.values())]

    def get(self, key: str) -> bytes:
        for store in self._stores():
            try:
                return AssetStore.get(store, key)
            except AssetNotFound:
                continue
        raise AssetNotFound(key)

    def exists(self, key: str) -> bool:
        return any(AssetStore.exists(store, key) for store in self._stores())

    def delete_prefix(self, prefix: str) -> None:
        for store in self._stores():
            AssetStore.delete_prefix(store, prefix)


def sign(secret: bytes, key: str, expires_at: int) -> str:
    return hmac.new(secret, f"{key}\n{expires_at}".encode(), hashlib.sha256).hexdigest()


def verify(secret: bytes, key: str, expires_at: int, signature: str, now: float | None = None) -> bool:
    if (now if now is not None else time.time()) > expires_at:
        return False
    return hmac.compare_digest(sign(secret, key, expires_at).encode(), signature.encode("utf-8", "replace"))
