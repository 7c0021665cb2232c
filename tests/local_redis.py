"""Redis in tests: a unique key prefix on the local Redis removed afterwards, a liveness
probe, and `OwnRedis`, a `redis-server` a test starts, kills, stops and restarts."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.servers import free_port, wait_until


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


@dataclass
class OwnRedis:
    """A `redis-server` of one test on a free loopback port. With `durable` set to a
    directory it keeps every acknowledged write (AOF, fsync always), so killing it loses
    only what was never answered; otherwise nothing is persisted."""

    port: int
    durable: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        if self.durable is None:
            args += ["--appendonly", "no"]
        else:
            args += ["--dir", str(self.durable), "--appendonly", "yes", "--appendfsync", "always"]
        proc = self.proc = subprocess.Popen(
            [*args, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            up = wait_until(
                lambda: pings(client),
                time.monotonic() + 5,
                every=0.02,
                alive=lambda: proc.poll() is None,
            )
        finally:
            client.close()
        assert up, f"redis-server did not start (exit status {proc.poll()})"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also ends a stopped process
            self.proc.wait(timeout=5)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered (a stalled Redis)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


@contextmanager
def own_redis_server(durable: Path | None = None) -> Iterator[OwnRedis]:
    """A started `OwnRedis`, killed on leaving; skips the test without `redis-server`."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(free_port(), durable)
    server.start()
    try:
        yield server
    finally:
        server.kill()
