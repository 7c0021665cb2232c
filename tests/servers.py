"""Real servers on loopback for tests: any ASGI app served by uvicorn in a thread, the
pieces of ASGI the fake upstreams share, and waiting for and stopping server processes."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    deadline: float,
    *,
    every: float,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Call `ready()` every `every` s until it holds (True), or until the monotonic
    `deadline` passes or `alive()` no longer holds, whichever comes first (False)."""
    while not ready():
        if not alive() or time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` s; close its stdout pipe."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout:
        proc.stdout.close()


class ServerThread:
    """Serve `app` on 127.0.0.1:<free port> in a background thread with its own loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            http="h11",
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        started = wait_until(
            lambda: self.server.started,
            time.monotonic() + 10,
            every=0.01,
            alive=self.thread.is_alive,
        )
        if not started:
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


# -- ASGI pieces for the fake upstreams ----------------------------------------------


async def handle_lifespan(scope: Any, receive: Any, send: Any) -> bool:
    """Answer a `lifespan` scope (startup, then shutdown) to its end: True. Any other
    scope is left alone: False."""
    if scope["type"] != "lifespan":
        return False
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return True


async def read_body(receive: Any) -> bytes:
    """The whole request body, however many messages it comes in."""
    body = b""
    while True:
        message = await receive()
        chunk: bytes = message.get("body", b"")
        body += chunk
        if not message.get("more_body"):
            return body


async def send_json(
    send: Any, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A whole JSON answer: `content-type: application/json`, then `extra` headers."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *(extra or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})
