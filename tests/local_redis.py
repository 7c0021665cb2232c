"""The local Redis in tests: a unique key prefix removed afterwards, and a liveness probe."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from tests.conftest import REDIS_URL


@contextmanager
def redis_prefix(stem: str = "rgtest") -> Iterator[str]:
    """A unique key prefix (`<stem>-<12 hex>`) on the local Redis; on leaving, every key
    under it is deleted."""
    prefix = f"{stem}-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            stored = list(client.scan_iter(match=f"{prefix}:*"))
            if stored:
                client.delete(*stored)
        finally:
            client.close()


def pings(client: redis.Redis) -> bool:
    """The server behind `client` answers PING (False while it cannot be reached)."""
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
