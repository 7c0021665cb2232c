"""`railgate serve` as a real process, the way an operator runs it: a YAML config on disk,
a free loopback port, its output in a log file, waited for on `/healthz`, then stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.servers import free_port, stop_process, wait_until

RAILGATE = str(Path(sys.executable).parent / "railgate")


def serve_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ambient Railgate or provider settings,
    unbuffered (the log shows what was printed when it was printed), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RAILGATE_") and k not in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    """`raw` as the YAML file `path`; returns `path`."""
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class RailgateProcess:
    """One `railgate serve` process; its stdout and stderr go to `log`."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(
        cls,
        log: Path,
        config: Path | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> RailgateProcess:
        """`railgate serve [--config config] --port <free port> *args` with `env`
        (default `serve_env()`); returns at once (see `wait_healthy`)."""
        port = free_port()
        config_args = ["--config", str(config)] if config is not None else []
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [RAILGATE, "serve", *config_args, "--port", str(port), *args],
                env=dict(env) if env is not None else serve_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, f"http://127.0.0.1:{port}", log)

    @property
    def chat(self) -> str:
        return self.url + "/v1/chat/completions"

    def read_log(self) -> str:
        return self.log.read_text()

    def running(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_healthy(self, deadline: float) -> None:
        """Until `/healthz` answers 200; fails, with the log, if the process exits first
        or the monotonic `deadline` passes."""
        if not wait_until(self.healthy, deadline, every=0.05, alive=self.running):
            raise AssertionError(f"railgate serve did not come up:\n{self.read_log()}")

    def stop(self) -> None:
        stop_process(self.proc)


@contextmanager
def serving(
    *runs: tuple[Path, Path | None],
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    within: float = 30.0,
) -> Iterator[list[RailgateProcess]]:
    """One `railgate serve` per (log, config) in `runs`, started together and waited for
    together (one start-up time, not one each; `within` s for all); all are stopped on
    leaving, also when one did not come up."""
    started: list[RailgateProcess] = []
    try:
        for log, config in runs:
            started.append(RailgateProcess.start(log, config, args, env))
        deadline = time.monotonic() + within
        for railgate in started:
            railgate.wait_healthy(deadline)
        yield started
    finally:
        for railgate in started:
            railgate.stop()
