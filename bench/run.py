"""Side-by-side throughput benchmark: direct upstream vs. the floor proxy vs. Railgate.

Starts nginx as an instant fake OpenAI upstream, then each proxy in turn pinned to
core 0, drives it with wrk pinned to core 1, and prints a markdown table with the
Railgate/floor throughput ratio and, with the `railgate-pii` target (`--pii`), the
PII-guard-on/no-guard ratio on a prompt full of varying PII, with the
`railgate-limits` target (`--limits`), the limits-on (Redis store)/no-limits ratio, and
with the `railgate-telemetry` target (`--telemetry`), the telemetry-on (OTLP + Langfuse
exporters into bench/otlp_sink.py)/telemetry-off ratio, both on Redis.
Every process it starts is stopped on exit. See bench/README.md.
"""

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floor import BENCH_KEY

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
TARGETS = (
    "upstream",
    "floor",
    "railgate",
    "railgate-pii",
    "railgate-redis",
    "railgate-limits",
    "railgate-telemetry",
)
DEFAULT_TARGETS = ("upstream", "floor", "railgate")
RAILGATES = ("railgate", "railgate-pii", "railgate-redis", "railgate-limits", "railgate-telemetry")
ON_REDIS = ("railgate-redis", "railgate-limits", "railgate-telemetry")
FLAG_TARGETS = {  # --flag: the (baseline, target) pair it adds
    "pii": ("railgate", "railgate-pii"),
    "limits": ("railgate-redis", "railgate-limits"),
    "telemetry": ("railgate-redis", "railgate-telemetry"),
}
PROMPTS = {"plain": "post.lua", "pii": "post_pii.lua"}  # wrk scripts in bench/
PII_ENTITIES = 5  # PII values per request in post_pii.lua
RAILGATE_SECRET = "bench-secret-0123456789abcdef0123456789abcdef"
PROXY_CORE, LOAD_CORE = "0", "1"
UPSTREAM_KEY = "sk-bench-upstream-0000000000000000"
APT_COMMAND = ["apt-get", "install", "-y", "--no-install-recommends", "wrk", "nginx"]
GOAL_RATIO = 0.5
GOAL_LIMITS_RATIO = 0.8  # limits on (Redis) / no limits, throughput
GOAL_TELEMETRY_RATIO = 0.85  # telemetry exporters on / off (both on Redis), throughput
GOAL_ADDED_MS = 1.0  # PII guard: median latency added per ~1 KB prompt at c=1
CHAT_PATH = "/v1/chat/completions"
ANSWER = (
    '{"id":"chatcmpl-bench0001","object":"chat.completion","created":1733300000,'
    '"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant",'
    '"content":"Top issues: duplicate charges, failed card updates, late invoices."},'
    '"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":231,"completion_tokens":14,"total_tokens":245}}'
)
NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    client_body_buffer_size 64k;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location = {chat_path} {{
            default_type application/json;
            return 200 '{answer}';
        }}
        location = /healthz {{
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
    }}
}}
"""
RAILGATE_CONFIG = """\
server: {{host: 127.0.0.1, port: {port}, workers: 1}}
store: "{store}"
providers:
  - {{name: up, type: openai, base_url: "{upstream}/v1", api_key_env: BENCH_UPSTREAM_KEY}}
models:
  - {{name: bench-model, provider: up}}
tenants:
  - id: bench
    keys: [{{name: bench, key_sha256: "{key_sha256}"}}]
{policy}"""
PII_POLICY = """\
    policy:
      input:
        - pii: {action: pseudonymize}
      output:
        - pii: {entities: [CREDIT_CARD, API_KEY], action: redact}
"""
LIMITS = """\
    limits: {rpm: 100000000, tpm: 100000000000, concurrency: 10000, budget_usd_day: 1000000}
    model_limits: {bench-model: {rpm: 100000000}}
"""
"""Every kind of limit, high enough never to refuse: the cost of checking them all."""
TELEMETRY = """\
telemetry:
  langfuse:
    host: "{sink}"
    public_key_env: BENCH_LANGFUSE_PUBLIC
    secret_key_env: BENCH_LANGFUSE_SECRET
    send_content: true
"""
"""Langfuse into the OTLP sink; the OTLP exporter is switched on by `TELEMETRY_ENV`."""
LANGFUSE_KEYS = {"BENCH_LANGFUSE_PUBLIC": "pk-lf-bench", "BENCH_LANGFUSE_SECRET": "sk-lf-bench"}
LANGFUSE_PATH = "/api/public/otel/v1/traces"
TELEMETRY_METRICS = ("railgate_telemetry_exported_total", "railgate_telemetry_dropped_total")
PII_SMOKE_TEXT = (
    "Mail ada.obi@example.com or call +234 803 123 4567 about card 4111 1111 1111 1111."
)


@dataclass
class Result:
    target: str
    prompt: str
    concurrency: int
    round: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    proxy_cpu_ms_per_req: float | None
    nginx_cpu_ms_per_req: float
    other_cpu_pct: float
    errors: dict[str, int]
    mean_ms: float = 0.0
    body_bytes: int = 0
    """Size of the (last) request body wrk sent."""
    guarded: int | None = None
    """Answers carrying `x-railgate-guard-ms` (pii prompt only)."""
    pii_per_req: float | None = None
    """Mean `pii.pseudonymized=` count per guarded answer (pii prompt only)."""
    guard_ms: float | None = None
    """Mean of `x-railgate-guard-ms`, the gateway's own guard time (pii prompt only)."""
    calls: int | None = None
    """Requests the gateway counted (`railgate_requests_total`) in warm-up + run
    (railgate-telemetry only, like the fields below)."""
    sink_spans: int | None = None
    """Spans bench/otlp_sink.py received for warm-up + run, once the exporters settled."""
    sink_langfuse_spans: int | None = None
    """Of `sink_spans`, those posted to Langfuse's path."""
    telemetry_exported: dict[str, int] | None = None
    """`railgate_telemetry_exported_total` added during warm-up + run, per exporter."""
    telemetry_dropped: dict[str, int] | None = None
    """`railgate_telemetry_dropped_total` added during warm-up + run, per exporter."""
    sink_cpu_ms_per_call: float | None = None
    """CPU of bench/otlp_sink.py per call over warm-up + run (part of other CPU %)."""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of `root` and its live descendants, plus its reaped children."""
    stats: dict[int, list[str]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            stats[int(entry.name)] = text[text.rindex(")") + 2 :].split()  # fields after comm
    ticks, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        seen.add(pid)
        fields = stats.get(pid)
        if fields is not None:  # fields[1] = ppid, [11:15] = utime stime cutime cstime
            ticks += sum(int(f) for f in fields[11:15])
            todo += [p for p, f in stats.items() if int(f[1]) == pid and p not in seen]
    return ticks / os.sysconf("SC_CLK_TCK")


class Processes:
    """Background processes, each in its own session so its whole group can be stopped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_file = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log_file.close()
        self.running.append(proc)
        return proc

    def log_tail(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)  # the group id is the pid of the process we started
            try:
                proc.wait(grace)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.running[:]):
            self.stop(proc)


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only


def http(
    url: str, body: bytes | None = None, key: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and (lower-cased) headers of one request."""
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with _NO_PROXY.open(request, timeout=5) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), {k.lower(): v for k, v in exc.headers.items()}


def wait_healthy(procs: Processes, name: str, proc: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            if http(base + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not healthy after 60 s:\n{procs.log_tail(name)}")


def smoke_test(name: str, base: str, check_auth: bool) -> None:
    """One real request must succeed (with usage) and, behind a proxy, a bad key must not.

    Behind Railgate a prompt with PII must also succeed, and only `railgate-pii` may
    report pseudonymized PII in `x-railgate-guards` (nginx answers a fixed body, so what
    was forwarded cannot be seen here; the rails tests cover that)."""
    body = json.dumps({"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]})
    status, answer, _ = http(base + CHAT_PATH, body.encode(), BENCH_KEY)
    if status != 200 or "usage" not in json.loads(answer):
        raise RuntimeError(f"{name}: smoke request got {status}: {answer[:300]!r}")
    if check_auth and http(base + CHAT_PATH, body.encode(), "rg-wrong")[0] != 401:
        raise RuntimeError(f"{name}: a wrong key was not refused with 401")
    if name in RAILGATES:
        message = {"role": "user", "content": PII_SMOKE_TEXT}
        body = json.dumps({"model": "bench-model", "messages": [message]})
        status, answer, headers = http(base + CHAT_PATH, body.encode(), BENCH_KEY)
        guards = headers.get("x-railgate-guards", "")
        if status != 200 or "usage" not in json.loads(answer):
            raise RuntimeError(f"{name}: PII smoke request got {status}: {answer[:300]!r}")
        if (name == "railgate-pii") != ("pii.pseudonymized=" in guards):
            raise RuntimeError(f"{name}: unexpected x-railgate-guards: {guards!r}")
        log(f"{name}: PII smoke request ok, x-railgate-guards: {guards or '(none)'}")
        if (name == "railgate-limits") != ("x-ratelimit-remaining-requests" in headers):
            raise RuntimeError(f"{name}: x-ratelimit headers do not match the target")


def run_wrk(base: str, connections: int, seconds: int, prompt: str) -> dict[str, Any]:
    script = str(BENCH_DIR / PROMPTS[prompt])
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    cmd += ["--timeout", "10s", "--latency", "-s", script, base + CHAT_PATH]
    env = {**os.environ, "BENCH_KEY": BENCH_KEY}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 30)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return result
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}{out.stderr}")


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine, without interrupts (mostly our loopback traffic)."""
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot(proxy_pid: int | None, nginx_pid: int) -> tuple[float, float, float, float]:
    """CPU seconds so far of: the proxy tree, nginx, our reaped children (wrk), the machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        tree_cpu_seconds(proxy_pid) if proxy_pid else 0.0,
        tree_cpu_seconds(nginx_pid),
        children.ru_utime + children.ru_stime,
        machine_busy_seconds(),
    )


def measure(
    target: str,
    prompt: str,
    base: str,
    pids: tuple[int | None, int],
    connections: int,
    rnd: int,
    seconds: int,
    warmup: int,
) -> Result:
    """One wrk run after a discarded warm-up; `pids` are the proxy (None: no proxy) and nginx."""
    run_wrk(base, connections, warmup, prompt)
    before = cpu_snapshot(*pids)
    raw = run_wrk(base, connections, seconds, prompt)
    proxy, nginx, wrk, machine = (a - b for a, b in zip(cpu_snapshot(*pids), before, strict=True))
    n, elapsed = max(raw["requests"], 1), raw["duration_us"] / 1e6
    guarded = raw.get("guarded")
    result = Result(
        target=target,
        prompt=prompt,
        concurrency=connections,
        round=rnd,
        requests=raw["requests"],
        seconds=elapsed,
        rps=raw["requests"] / elapsed,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        proxy_cpu_ms_per_req=proxy * 1000 / n if pids[0] else None,
        nginx_cpu_ms_per_req=nginx * 1000 / n,
        other_cpu_pct=max(machine - proxy - nginx - wrk, 0.0) * 100 / elapsed,
        errors={k: v for k, v in raw["errors"].items() if v},
        mean_ms=raw["mean_us"] / 1000,
        body_bytes=raw["body_bytes"],
        guarded=guarded,
        pii_per_req=raw["pii_pseudonymized"] / guarded if guarded else None,
        guard_ms=raw["guard_ms_total"] / guarded if guarded else None,
    )
    extra = ""
    if guarded is not None:
        extra = f", {guarded}/{raw['requests']} guarded"
        if result.pii_per_req is not None:
            extra += f", {result.pii_per_req:.2f} PII/req, guard {result.guard_ms:.3f} ms"
    log(
        f"round {rnd} {target} ({prompt} prompt) c={connections}: "
        f"{result.rps:,.0f} req/s{extra} {result.errors}"
    )
    return result


def guard_problem(r: Result) -> str | None:
    """Why a pii-prompt run does not show the guard as configured (None: it does)."""
    if r.prompt != "pii" or r.guarded is None:
        return None
    if r.target == "railgate" and r.guarded:
        return f"{r.guarded} answers carry guard headers with guards off"
    if r.target == "railgate-pii" and r.guarded < r.requests:
        return f"only {r.guarded} of {r.requests} answers carry guard headers"
    if r.target == "railgate-pii" and (r.pii_per_req or 0) < PII_ENTITIES:
        return f"{r.pii_per_req:.2f} PII values pseudonymized per request, expected {PII_ENTITIES}"
    return None


def start_nginx(procs: Processes, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(user=user, dir=workdir, port=port, chat_path=CHAT_PATH, answer=ANSWER)
    (workdir / "nginx.conf").write_text(conf)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    cmd = ["taskset", "-c", LOAD_CORE, nginx, "-p", str(workdir), "-c", "nginx.conf"]
    proc = procs.start("nginx", [*cmd, "-e", str(workdir / "nginx-error.log")])
    base = f"http://127.0.0.1:{port}"
    wait_healthy(procs, "nginx", proc, base)
    return proc, base


def start_redis(procs: Processes, workdir: Path) -> str:
    """A redis-server of our own for `railgate-limits`, pinned with the load generator and
    the upstream: like them it stands for another machine, so it does not take the
    proxy's core. Nothing is persisted; it is stopped with everything else."""
    port = free_port()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    cmd = ["taskset", "-c", LOAD_CORE, server, "--port", str(port), "--bind", "127.0.0.1"]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = procs.start("redis", cmd)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{procs.log_tail('redis')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.1)
    raise RuntimeError("redis-server did not answer PING")


def start_sink(procs: Processes) -> tuple[subprocess.Popen[bytes], str]:
    """bench/otlp_sink.py, pinned like nginx and redis (it stands for another machine)."""
    port = free_port()
    cmd = ["taskset", "-c", LOAD_CORE, sys.executable, str(BENCH_DIR / "otlp_sink.py"), str(port)]
    proc = procs.start("otlp-sink", cmd)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(procs, "otlp-sink", proc, base)
    return proc, base


def sink_spans(sink: str) -> tuple[int, int]:
    """Spans the sink received so far: all of them, and those posted to Langfuse's path."""
    stats = json.loads(http(sink + "/stats")[1])
    spans = sum(counts["spans"] for counts in stats.values())
    return spans, stats.get(LANGFUSE_PATH, {}).get("spans", 0)


def settle_sink(sink: str, quiet: float = 1.5, limit: float = 15.0) -> tuple[int, int]:
    """Wait until no span arrived for `quiet` s (the exporters send every 1 s), so that
    what was queued during a run is delivered before the next run starts; then count."""
    deadline, last, since = time.monotonic() + limit, sink_spans(sink), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < quiet:
        time.sleep(0.2)
        now = sink_spans(sink)
        if now != last:
            last, since = now, time.monotonic()
    return last


def check_smoke_spans(sink: str, limit: float = 15.0) -> None:
    """The smoke requests' spans must reach the sink from both exporters."""
    deadline = time.monotonic() + limit
    total, langfuse = sink_spans(sink)
    while (not langfuse or total <= langfuse) and time.monotonic() < deadline:
        time.sleep(0.2)
        total, langfuse = sink_spans(sink)
    total, langfuse = settle_sink(sink)
    log(f"railgate-telemetry smoke: sink received {total} spans ({langfuse} from Langfuse)")
    if not langfuse or total <= langfuse:
        raise RuntimeError("railgate-telemetry: an exporter sent nothing to the sink")


_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(base: str) -> list[tuple[str, dict[str, str], float, str]]:
    """The samples of the gateway's `/metrics`: name, labels, value and the line itself."""
    status, text, _ = http(base + "/metrics")
    if status != 200:
        raise RuntimeError(f"{base}/metrics answered {status}")
    samples = []
    for line in text.decode().splitlines():
        if (match := _SAMPLE.match(line)) is not None:
            labels = dict(_LABEL.findall(match[2] or ""))
            samples.append((match[1], labels, float(match[3]), line))
    return samples


def per_exporter(
    samples: list[tuple[str, dict[str, str], float, str]], name: str
) -> dict[str, int]:
    """One counter's series by exporter (the label is `exporter`; an older `kind` too)."""
    out: dict[str, int] = {}
    for metric, labels, value, _line in samples:
        if metric == name:
            exporter = labels.get("exporter", labels.get("kind", ""))
            out[exporter] = out.get(exporter, 0) + int(value)
    return out


def calls_counted(samples: list[tuple[str, dict[str, str], float, str]]) -> int:
    return int(sum(v for name, _, v, _line in samples if name == "railgate_requests_total"))


def telemetry_delta(
    before: list[tuple[str, dict[str, str], float, str]],
    after: list[tuple[str, dict[str, str], float, str]],
) -> tuple[dict[str, int], dict[str, int]]:
    """Exported and dropped spans per exporter between two scrapes."""
    out = []
    for name in TELEMETRY_METRICS:
        old, new = per_exporter(before, name), per_exporter(after, name)
        out.append({k: v - old.get(k, 0) for k, v in sorted(new.items())})
    return out[0], out[1]


def start_proxy(
    procs: Processes,
    target: str,
    upstream: str,
    workdir: Path,
    redis_url: str = "",
    sink: str = "",
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILGATE_", "OTEL_"))}
    if target == "floor":
        cmd = [sys.executable, str(BENCH_DIR / "floor.py"), str(port), upstream + "/v1"]
    else:
        config = workdir / f"{target}.yaml"
        key_sha256 = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
        policy = {"railgate-pii": PII_POLICY, "railgate-limits": LIMITS}.get(target, "")
        store = redis_url if target in ON_REDIS else "memory://"
        text = RAILGATE_CONFIG.format(
            port=port, upstream=upstream, key_sha256=key_sha256, policy=policy, store=store
        )
        if target == "railgate-telemetry":  # both exporters into the sink
            text += TELEMETRY.format(sink=sink)
            env |= LANGFUSE_KEYS
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink  # `/v1/traces` gets appended
            env["OTEL_SERVICE_NAME"] = "railgate-bench"
        config.write_text(text)
        cmd = [railgate_command(), "serve", "--config", str(config), "--port", str(port)]
        env["BENCH_UPSTREAM_KEY"] = UPSTREAM_KEY
        if target == "railgate-pii":
            env["RAILGATE_SECRET"] = RAILGATE_SECRET
    proc = procs.start(target, ["taskset", "-c", PROXY_CORE, *cmd], env)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(procs, target, proc, base)
    smoke_test(target, base, check_auth=True)
    return proc, base


def railgate_command() -> str:
    beside_python = Path(sys.executable).parent / "railgate"
    return str(beside_python) if beside_python.exists() else shutil.which("railgate") or ""


def ensure_tools(install: bool, targets: list[str]) -> None:
    missing = [
        t for t in ("wrk", "nginx") if not (shutil.which(t) or Path("/usr/sbin", t).exists())
    ]
    if missing and install:
        log(f"installing {missing}: {' '.join(APT_COMMAND)}")
        subprocess.run(
            APT_COMMAND,
            check=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        missing = []
    if missing:
        sys.exit(f"missing {', '.join(missing)}; run: {' '.join(APT_COMMAND)} (or pass --install)")
    if set(RAILGATES) & set(targets) and not railgate_command():
        pip = [sys.executable, "-m", "pip", "install", "-e", str(REPO)]
        if not (install and (REPO / "gateway" / "cli.py").exists()):
            sys.exit(f"railgate is not installed; run: {' '.join(pip)} (or pass --install)")
        subprocess.run(pip, check=True, timeout=600)


def machine_facts() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        "?",
    )
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "wrk": wrk.stdout.split("\n")[0].strip(),
        "loadavg before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def plan(targets: list[str]) -> list[tuple[str, str]]:
    """(target, prompt) runs per concurrency and round, each comparison back to back.

    upstream and floor use the plain prompt; railgate-pii the PII prompt; railgate both:
    the plain one against the floor (when upstream or floor is selected, or railgate-pii
    is not) and the PII one as the no-guard baseline of railgate-pii.
    """
    pii = "railgate-pii" in targets
    runs: list[tuple[str, str]] = []
    for target in targets:
        if target == "railgate":
            if not pii or {"upstream", "floor"} & set(targets):
                runs.append((target, "plain"))
            if pii:
                runs.append((target, "pii"))
        else:
            runs.append((target, "pii" if target == "railgate-pii" else "plain"))
    return runs


def medians(results: list[Result]) -> list[Result]:
    """Per target, prompt and concurrency, the round with the median throughput."""
    groups: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        groups.setdefault((r.target, r.prompt, r.concurrency), []).append(r)
    return [sorted(rs, key=lambda r: r.rps)[len(rs) // 2] for rs in groups.values()]


COMPARISONS = {  # name: (target, baseline), both on the same prompt
    "railgate/floor": (("railgate", "plain"), ("floor", "plain")),
    "railgate-pii/railgate": (("railgate-pii", "pii"), ("railgate", "pii")),
    "railgate-limits/railgate-redis": (("railgate-limits", "plain"), ("railgate-redis", "plain")),
    "railgate-telemetry/railgate-redis": (
        ("railgate-telemetry", "plain"),
        ("railgate-redis", "plain"),
    ),
}
GOALS = {
    "railgate-limits/railgate-redis": GOAL_LIMITS_RATIO,
    "railgate-telemetry/railgate-redis": GOAL_TELEMETRY_RATIO,
}
ON_OFF = {  # comparisons reported with p99, added p50 and CPU per round
    "railgate-limits/railgate-redis": "Limits",
    "railgate-telemetry/railgate-redis": "Telemetry",
}


def paired(results: list[Result], name: str) -> dict[int, list[tuple[Result, Result]]]:
    """Per concurrency, one (target, baseline) pair of runs per round."""
    target, baseline = COMPARISONS[name]
    by_key = {(r.target, r.prompt, r.concurrency, r.round): r for r in results}
    out: dict[int, list[tuple[Result, Result]]] = {}
    for (t, prompt, c, rnd), r in by_key.items():
        if (t, prompt) == target and (*baseline, c, rnd) in by_key:
            out.setdefault(c, []).append((r, by_key[(*baseline, c, rnd)]))
    return out


def ratios(results: list[Result]) -> dict[str, dict[int, list[float]]]:
    """Per comparison and concurrency, the throughput ratio of every round."""
    out: dict[str, dict[int, list[float]]] = {}
    for name in COMPARISONS:
        pairs = paired(results, name)
        if pairs:
            out[name] = {c: [a.rps / b.rps for a, b in ps] for c, ps in pairs.items()}
    return out


def pii_added(results: list[Result]) -> dict[int, dict[str, list[float]]]:
    """railgate-pii minus railgate on the PII prompt, per concurrency, one value per round:
    median and mean latency (ms) and proxy CPU per request (ms)."""
    out: dict[int, dict[str, list[float]]] = {}
    for c, pairs in paired(results, "railgate-pii/railgate").items():
        out[c] = {
            "p50_ms": [a.p50_ms - b.p50_ms for a, b in pairs],
            "mean_ms": [a.mean_ms - b.mean_ms for a, b in pairs],
            "cpu_ms_per_req": [
                (a.proxy_cpu_ms_per_req or 0) - (b.proxy_cpu_ms_per_req or 0) for a, b in pairs
            ],
        }
    return out


def report(facts: dict[str, str], results: list[Result], args: argparse.Namespace) -> str:
    lines = [f"- {k}: {v}" for k, v in facts.items()]
    by_prompt = {r.prompt: r.body_bytes for r in results}
    sizes = ", ".join(f"{p} {n:,} B" for p, n in by_prompt.items())
    lines += [
        f"- command: `{' '.join(['python', *sys.argv])}`",
        f"- proxies pinned to core {PROXY_CORE}; wrk and nginx (upstream) share core {LOAD_CORE}",
        f"- wrk -t1, {args.duration} s per run after a {args.warmup} s warm-up, "
        f"{args.rounds} round(s); rows show the median round by req/s",
        "- other CPU %: CPU used by anything else on the machine during the run (% of one core;"
        " high means a noisy run)",
        "- prompt: `plain` = bench/post.lua (fixed, no PII); `pii` = bench/post_pii.lua"
        f" ({PII_ENTITIES} PII values, varied per request); request bodies: {sizes}",
        "- guard ms: mean `x-railgate-guard-ms` (the gateway's own guard time per request);"
        " PII/req: mean `pii.pseudonymized=` count per answer",
    ]
    if "railgate-telemetry" in args.targets:
        lines.append(
            "- railgate-telemetry = railgate-redis + OTLP/HTTP JSON and Langfuse exporters"
            " (send_content: true) into bench/otlp_sink.py on core "
            f"{LOAD_CORE} (its CPU counts in other CPU %); both keep the default access log"
            " on, part of the gateway's baseline"
        )
    lines += [
        "",
        "| target | prompt | conc. | req/s | p50 ms | p99 ms | proxy CPU ms/req "
        "| nginx CPU ms/req | other CPU % | guard ms | PII/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in medians(results):
        cpu = "n/a" if r.proxy_cpu_ms_per_req is None else f"{r.proxy_cpu_ms_per_req:.3f}"
        key = (r.target, r.prompt, r.concurrency)
        same = [x for x in results if (x.target, x.prompt, x.concurrency) == key]
        errors = sum(sum(x.errors.values()) for x in same)
        guard = "n/a" if r.guard_ms is None else f"{r.guard_ms:.3f}"
        found = "n/a" if r.pii_per_req is None else f"{r.pii_per_req:.2f}"
        lines.append(
            f"| {r.target} | {r.prompt} | {r.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} "
            f"| {r.p99_ms:.2f} | {cpu} | {r.nginx_cpu_ms_per_req:.3f} | {r.other_cpu_pct:.0f} "
            f"| {guard} | {found} | {errors} |"
        )
    lines.append("")
    labels = {
        "railgate/floor": "Railgate/floor throughput",
        "railgate-pii/railgate": "Railgate PII on/off throughput (pii prompt)",
        "railgate-limits/railgate-redis": "Railgate limits on/off throughput (both on Redis)",
        "railgate-telemetry/railgate-redis": "Railgate telemetry on/off throughput (both on Redis)",
    }
    for name, per_c in ratios(results).items():
        goal = GOALS.get(name, GOAL_RATIO)
        for c, per_round in per_c.items():
            ratio = statistics.median(per_round)
            verdict = "meets" if ratio >= goal else "BELOW"
            rounds = ", ".join(f"{x:.2f}" for x in per_round)
            lines.append(
                f"- {labels[name]} at c={c}: **{ratio:.2f}x** "
                f"({verdict} the {goal}x goal; per round: {rounds})"
            )
    for name, what in ON_OFF.items():
        for c, pairs in paired(results, name).items():
            p99s = ", ".join(f"{a.p99_ms:.2f} vs {b.p99_ms:.2f}" for a, b in pairs)
            p50s = ", ".join(f"{a.p50_ms - b.p50_ms:+.2f}" for a, b in pairs)
            cpus = ", ".join(
                f"{a.proxy_cpu_ms_per_req or 0:.3f} vs {b.proxy_cpu_ms_per_req or 0:.3f}"
                for a, b in pairs
            )
            lines.append(
                f"- {what} on/off at c={c}: p99 ms (on vs off) per round: {p99s}; "
                f"p50 added ms: {p50s}; proxy CPU ms/req (on vs off) per round: {cpus}"
            )
    for r in results:
        if r.sink_spans is not None:
            lines.append(f"- Telemetry export, round {r.round} c={r.concurrency}: {export_note(r)}")
    for c, added in pii_added(results).items():
        p50 = statistics.median(added["p50_ms"])
        verdict = "meets" if p50 <= GOAL_ADDED_MS else "ABOVE"
        goal = f"{verdict} the {GOAL_ADDED_MS:g} ms goal; " if c == 1 else ""
        per_round = "; ".join(f"{k} {', '.join(f'{x:+.2f}' for x in v)}" for k, v in added.items())
        lines.append(
            f"- PII guard added at c={c}: median latency **{p50:+.2f} ms** "
            f"({goal}per round: {per_round})"
        )
    return "\n".join(lines)


def export_note(r: Result) -> str:
    """What the exporters delivered during one railgate-telemetry run (warm-up included)."""

    def each(counts: dict[str, int] | None) -> str:  # "" = the series without labels
        return ", ".join(f"{k} {v:,}" if k else f"{v:,}" for k, v in (counts or {}).items())

    return (
        f"sink received {r.sink_spans:,} spans ({r.sink_langfuse_spans:,} from Langfuse) "
        f"for {r.calls:,} calls (warm-up included); exported: {each(r.telemetry_exported)}; "
        f"dropped: {each(r.telemetry_dropped) or 0}; sink CPU {r.sink_cpu_ms_per_call:.3f} ms/call"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--targets",
        default=",".join(DEFAULT_TARGETS),
        help="comma list of " + ",".join(TARGETS),
    )
    parser.add_argument(
        "--pii",
        action="store_true",
        help="add railgate-pii and its no-guard railgate baseline on the PII prompt",
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help="add railgate-limits (Redis store, every limit on) and railgate-redis (no limits)",
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="add railgate-telemetry (OTLP + Langfuse exporters on) and railgate-redis (off)",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of discarded warm-up per run"
    )
    parser.add_argument("--concurrency", default="1,32", help="comma list of wrk connection counts")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all targets N times")
    parser.add_argument("--json", metavar="PATH", help="also write the raw results as JSON here")
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install wrk/nginx, pip install railgate if missing",
    )
    args = parser.parse_args()
    wanted = set(args.targets.split(","))
    if unknown := wanted - set(TARGETS):
        parser.error(f"unknown target(s): {', '.join(sorted(unknown))}")
    for flag, pair in FLAG_TARGETS.items():
        if getattr(args, flag):
            wanted |= set(pair)
    args.targets = [t for t in TARGETS if t in wanted]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if not args.targets or min(args.duration, args.warmup, args.rounds) < 1:
        parser.error("need a known target and --duration, --warmup, --rounds >= 1")
    return args


@dataclass
class ExportSnapshot:
    """Where the sink and the gateway's counters stood before a railgate-telemetry run."""

    spans: tuple[int, int]
    samples: list[tuple[str, dict[str, str], float, str]]
    sink_cpu_s: float

    @classmethod
    def take(cls, sink: str, sink_pid: int, base: str) -> "ExportSnapshot":
        return cls(sink_spans(sink), scrape(base), tree_cpu_seconds(sink_pid))


def record_export(
    result: Result, sink: str, sink_pid: int, base: str, before: ExportSnapshot
) -> None:
    """After a railgate-telemetry run: let the exporters deliver what is queued, then put
    what the sink received and the gateway's telemetry counters into `result`."""
    settle_sink(sink)
    after = ExportSnapshot.take(sink, sink_pid, base)
    result.sink_spans = after.spans[0] - before.spans[0]
    result.sink_langfuse_spans = after.spans[1] - before.spans[1]
    result.calls = calls_counted(after.samples) - calls_counted(before.samples)
    exported, dropped = telemetry_delta(before.samples, after.samples)
    result.telemetry_exported, result.telemetry_dropped = exported, dropped
    cpu_s = after.sink_cpu_s - before.sink_cpu_s
    result.sink_cpu_ms_per_call = cpu_s * 1000 / max(result.calls, 1)
    log(f"railgate-telemetry c={result.concurrency}: {export_note(result)}")
    for name, _labels, _value, line in after.samples:
        if name in TELEMETRY_METRICS:
            log(f"  /metrics: {line}")
    if sum(exported.values()) != result.sink_spans:
        log(f"WARNING: the sink got {result.sink_spans} spans, /metrics says {exported} exported")
    if any(dropped.values()):
        log(f"WARNING: spans dropped during the run: {dropped} (see railgate-telemetry.log)")


def main() -> int:
    args = parse_args()
    ensure_tools(args.install, args.targets)
    if (os.cpu_count() or 1) < 2:
        log("warning: fewer than 2 CPUs; pinning proxy and load generator apart is impossible")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in background
    facts = machine_facts()
    results: list[Result] = []
    runs_per_round = plan(args.targets)
    runs = args.rounds * len(runs_per_round) * len(args.concurrency)
    log(f"{runs} runs, about {runs * (args.duration + args.warmup)} s of load")
    with tempfile.TemporaryDirectory(prefix="railgate-bench-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)
        procs = Processes(workdir)
        try:
            nginx, upstream = start_nginx(procs, workdir)
            smoke_test("upstream", upstream, check_auth=False)
            endpoints: dict[str, tuple[int | None, str]] = {"upstream": (None, upstream)}
            on_redis = set(ON_REDIS) & set(args.targets)
            redis_url = start_redis(procs, workdir) if on_redis else ""
            sink_pid, sink = 0, ""
            if "railgate-telemetry" in args.targets:
                sink_proc, sink = start_sink(procs)
                sink_pid = sink_proc.pid
            for target in args.targets:
                if target != "upstream":
                    proxy, base = start_proxy(procs, target, upstream, workdir, redis_url, sink)
                    endpoints[target] = (proxy.pid, base)
            if sink:
                check_smoke_spans(sink)
            for rnd in range(1, args.rounds + 1):
                for connections in args.concurrency:
                    for target, prompt in runs_per_round:  # compared runs back to back
                        pid, base = endpoints[target]
                        pids = (pid, nginx.pid)
                        telemetry = target == "railgate-telemetry"
                        if telemetry:
                            before = ExportSnapshot.take(sink, sink_pid, base)
                        result = measure(
                            target, prompt, base, pids, connections, rnd, args.duration, args.warmup
                        )
                        results.append(result)
                        if telemetry:
                            record_export(result, sink, sink_pid, base, before)
                        if problem := guard_problem(result):
                            log(f"WARNING: {target} c={connections}: {problem}")
        except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as exc:
            log(f"FAILED: {exc}")
            return 1
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            procs.stop_all()
    print(report(facts, results, args))
    if args.json:
        data = {
            "facts": facts,
            "results": [asdict(r) for r in results],
            "ratios": ratios(results),
            "pii_added": pii_added(results),
        }
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
    failed = [r for r in results if r.errors or r.requests == 0 or guard_problem(r)]
    if failed:
        log(f"FAILED: errors in {[(r.target, r.prompt, r.concurrency) for r in failed]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
