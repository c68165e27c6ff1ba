"""sha256 helpers shared by weights provenance and caches."""

from __future__ import annotations

import hashlib


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
