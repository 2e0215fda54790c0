"""Decisions per second over loopback under gunicorn, against the framework floor.

Run: `python bench/decisions.py [--seconds 5] [--rounds 6] [--clients 8] [--workers 2] [--threads 1]
[--breakdown] [--pairs] [--database sqlite|postgres] [--calls-per-session N]`.

It serves two apps in turn with the same gunicorn settings (`gatekeeper serve`'s command
line): Gatekeeper on a temporary SQLite file, and the floor, a bare Flask app whose
POST /v1/decisions returns a constant JSON body. Client processes send decision requests over
fresh loopback connections (sync workers close each one) for the same time, with pre-built
request bytes so the client costs little CPU. It prints throughput, client p50/p99, the ratio
to the floor, Gatekeeper's server-side p50/p99 from the gatekeeper_decision_duration_seconds
histogram, and the CPU the gunicorn workers spent per request (read from /proc), which moves
less than throughput when other tenants share the host. `--breakdown` also serves, in the
same rounds, Gatekeeper without the decision and Gatekeeper deciding with its bare SQL only
(see ceilings.py): the best ratios its request work and its transaction allow. `--pairs` adds a
Gatekeeper server whose clients report each allowed call's outcome right after its decision
(decision+outcome pairs per second, CPU per pair). `--database postgres` runs Gatekeeper on a
throwaway Postgres cluster (tests/support/services.py) and adds the CPU its backends spent per
request. `--calls-per-session N` makes each client send N calls on one session before the next (an agent's
session; the default 1 goes round-robin over all sessions, so a worker rarely sees one session twice).
Targets (issue 3, restated by issue 17): ratio >= 0.90 of the bare-SQL ceiling,
server p99 < 1 ms on SQLite. A benchmark: it never fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gatekeeper import create_app, rollouts, sessions  # noqa: E402 - after the path fix above
from gatekeeper.cli.serve import APP, GRANIAN_APP, granian_command, gunicorn_command  # noqa: E402
from gatekeeper.store.tokens import create_token  # noqa: E402

CONSTANT = {"decision_id": "0660d58660c099adfcbf93dc", "verdict": "allow", "reason": "",
            "remaining": {"tool_calls": 59, "spend": 1.99}}


def floor() -> Flask:
    """Return the framework floor: Flask answering POST /v1/decisions with a constant JSON body."""
    app = Flask("floor")

    @app.post("/v1/decisions")
    def decide() -> dict[str, Any]:
        return CONSTANT

    return app


def _prepare(url: str, sessions_needed: int) -> tuple[str, str, list[str]]:
    """Create the database, an agent, its token and enough sessions; return (url, token, session ids)."""
    app = create_app({"database_url": url, "policy_dir": REPO / "policies"})
    svc = app.extensions["gatekeeper"]
    svc.db.upgrade()
    now = time.time()
    rollouts.register_agent(svc, "support-bot", policy="support-default", stable_version="v1", now=now)
    with svc.db.transaction() as db:
        token, _ = create_token("bench", role="agent", agent="support-bot", now=now, db=db)
    ids = [sessions.start_session(svc, "support-bot", session_key=f"k{n}", environment="live", scenario=None,
                                  twin_snapshot_at=None, now=now).session.id for n in range(sessions_needed)]
    svc.db.dispose()
    return url, token, ids


# `--servers`: the WSGI servers compared. Granian runs as `serve --server granian` does (its edge checks
# included), with one blocking thread and with two (what the README advises: one stalled body pins a thread).
SERVERS = ("gunicorn sync", "gunicorn gthread", "granian", "granian 2 threads")


def _command(app: str, port: int, args: argparse.Namespace, server: str) -> list[str]:
    """Return the command line serving `app` with one of SERVERS (`gatekeeper serve`'s own for each)."""
    if server.startswith("granian"):
        threads = 2 if server == "granian 2 threads" else args.threads
        target, factory = (app[:-2], ["--factory"]) if app.endswith("()") else (app, [])
        return [*granian_command(bind=f"127.0.0.1:{port}", workers=args.workers, threads=threads, timeout=30,
                                 app=GRANIAN_APP if target == APP else target), *factory]
    threads = 4 if server == "gunicorn gthread" else args.threads
    return gunicorn_command(bind=f"127.0.0.1:{port}", workers=args.workers, threads=threads, timeout=30, app=app)


def _serve(app: str, port: int, args: argparse.Namespace, env: dict[str, str],
           server: str = "gunicorn sync") -> subprocess.Popen[bytes]:
    command = _command(app, port, args, server) if args.servers else gunicorn_command(
        bind=f"127.0.0.1:{port}", workers=args.workers, threads=args.threads, timeout=30, app=app)
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).parent, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{app} did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def _send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"unexpected answer: {answer[:300]!r}")
    return answer


OUTCOME = b'{"status": "ok", "latency_ms": 12.5}'


def _client(port: int, requests_: list[bytes], seconds: float, out: Any, outcome: bytes | None = None) -> None:
    """Send the requests round-robin until time is up (each with its outcome report when `outcome` is the
    request head to send it with); put the latencies on `out`."""
    latencies, index, deadline = [], 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        answer = _send(port, requests_[index % len(requests_)])
        if outcome is not None:
            decision_id = json.loads(answer.split(b"\r\n\r\n", 1)[1])["decision_id"]
            _send(port, outcome.replace(b"{id}", decision_id.encode()) + OUTCOME)
        latencies.append(time.perf_counter() - started)
        index += 1
    out.put(latencies)


def _workers_cpu_s(server: subprocess.Popen[bytes]) -> float:
    """Return the CPU seconds (user + system) the server's worker processes have used so far."""
    total = 0.0
    for child in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split():
        fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _tree_cpu_s(pid: int | None) -> float:
    """Return the CPU seconds a process and all its descendants (Postgres: every backend) have used so far."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(n) for n in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # a backend that ended meanwhile
    return total


def _load(port: int, bodies: list[bytes], token: str, args: argparse.Namespace,
          server: subprocess.Popen[bytes] | None = None, *, pairs: bool = False) -> dict[str, float]:
    """Run the clients against one server; return throughput, client latency percentiles and worker CPU."""
    head = ("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token +
            "\r\nContent-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
    requests_ = [head.format(path="/v1/decisions", length=len(body)).encode() + body for body in bodies]
    outcome = head.format(path="/v1/decisions/{id}/outcome", length=len(OUTCOME)).encode() if pairs else None
    out: Any = multiprocessing.Queue()
    runs = min(args.calls_per_session, 50)  # a session allows 50 calls (_slice)
    shares = [[r for r in requests_[n::args.clients] for _ in range(runs)] for n in range(args.clients)]
    workers = [multiprocessing.Process(target=_client, args=(port, share, args.seconds, out, outcome))
               for share in shares]
    cpu_before = _workers_cpu_s(server) if server else 0.0
    db_before = _tree_cpu_s(args.db_pid)
    for worker in workers:
        worker.start()
    latencies = sorted(x for _ in workers for x in out.get(timeout=args.seconds + 60))
    for worker in workers:
        worker.join(timeout=10)
    cpu = (_workers_cpu_s(server) - cpu_before) if server else float("nan")
    db_cpu = _tree_cpu_s(args.db_pid) - db_before
    return {"rps": len(latencies) / args.seconds, "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000, "count": len(latencies),
            "cpu_us": cpu / len(latencies) * 1e6, "db_cpu_us": db_cpu / len(latencies) * 1e6}


def _histogram(port: int) -> dict[float, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {float(s.labels["le"]): s.value for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "gatekeeper_decision_duration_seconds_bucket"}


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Return the q-quantile (seconds) of the observations between two cumulative-bucket scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    target, lower = q * counts[-1], 0.0
    for index, bound in enumerate(bounds):
        if counts[index] >= target:
            below = counts[index - 1] if index else 0.0
            inside = counts[index] - below
            share = (target - below) / inside if inside else 0.0
            return bound if bound == float("inf") else lower + (bound - lower) * share
        lower = bound
    return float("nan")


APPS = {"floor": "decisions:floor()", "gatekeeper": "gatekeeper.wsgi:app"}
BREAKDOWN = {"route only": "ceilings:route_only()", "bare SQL": "ceilings:bare_sql()"}  # see ceilings.py
PAIRS = {"pairs": "gatekeeper.wsgi:app"}  # decision + outcome per client iteration


def main() -> None:
    """Measure the floor and Gatekeeper in alternating rounds; print every round and the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one load phase")
    parser.add_argument("--rounds", type=int, default=6, help="floor/Gatekeeper pairs, alternated")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--breakdown", action="store_true",
                        help="also serve Gatekeeper without the decision and with only its bare SQL (ceilings.py)")
    parser.add_argument("--pairs", action="store_true", help="also serve Gatekeeper for decision+outcome pairs")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--calls-per-session", type=int, default=1, help="calls a client makes on one session in a row")
    parser.add_argument("--servers", action="store_true",
                        help="serve the floor and Gatekeeper under each of: " + ", ".join(SERVERS))
    args = parser.parse_args()
    apps = {**APPS, **(BREAKDOWN if args.breakdown else {}), **(PAIRS if args.pairs else {})}
    if args.servers:  # names "floor@granian", "gatekeeper@granian", ...; the plain names stay gunicorn sync
        apps = {**apps, **{f"{name}@{server}": APPS[name] for server in SERVERS[1:] for name in APPS}}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        url, args.db_pid = f"sqlite:///{folder / 'bench.db'}", None
        if args.database == "postgres":
            from tests.support.services import PostgresServer  # the tests' throwaway cluster

            (folder / "pg").mkdir()
            postgres = stack.enter_context(PostgresServer(folder / "pg"))
            url, args.db_pid = postgres.create_database("bench"), postgres._process.pid  # noqa: SLF001
        # Each server gets fresh sessions for its warm-up and for each round, so every call is an allow.
        url, token, ids = _prepare(url, sessions_needed=_slice(args) * len(apps) * (args.rounds + 1))
        bodies = [json.dumps({"session_id": s, "tool": "search_kb", "cost": 0.001}).encode() for s in ids]
        env = {**os.environ, "GATEKEEPER_DATABASE_URL": url, "GATEKEEPER_POLICY_DIR": str(REPO / "policies"),
               "GATEKEEPER_SECRET_KEY": "bench", "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
        (folder / "metrics").mkdir()
        ports = {name: _free_port() for name in apps}
        servers: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, app in apps.items():
                servers[name] = _serve(app, ports[name], args, env, name.partition("@")[2] or "gunicorn sync")
            rounds = _rounds(ports, servers, bodies, token, args)
        finally:
            for server in servers.values():
                _stop(server)
    _report(rounds, args)


def _rounds(ports: dict[str, int], servers: dict[str, subprocess.Popen[bytes]], bodies: list[bytes], token: str,
            args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
    size = _slice(args)
    fresh = (bodies[start:start + size] for start in range(0, len(bodies), size))
    for name, port in ports.items():
        _load(port, next(fresh), token, warm, pairs=name in PAIRS)
    rounds = []
    for _ in range(args.rounds):
        found = {}
        for name, port in ports.items():
            before = _histogram(port) if name.startswith("gatekeeper") else {}
            found[name] = _load(port, next(fresh), token, args, servers[name], pairs=name in PAIRS)
            if name.startswith("gatekeeper"):
                after = _histogram(port)
                found[name]["server_p50_ms"] = quantile(before, after, 0.50) * 1000
                found[name]["server_p99_ms"] = quantile(before, after, 0.99) * 1000
        rounds.append(found)
    return rounds


def _slice(args: argparse.Namespace) -> int:
    """Return how many sessions one load phase may need: 4,000 calls a second at most, 50 allowed per session."""
    return int(4000 * max(args.seconds, 1.0) / 50) + 10


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _report(rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"gunicorn --workers {args.workers} --threads {args.threads}, {args.clients} client processes, "
          f"{args.rounds} rounds of {args.seconds:g} s per server, {os.cpu_count()} CPUs, {args.database}")
    for number, found in enumerate(rounds, 1):
        floor_, gk = found["floor"], found["gatekeeper"]
        print(f"round {number}: floor {floor_['rps']:6.0f}/s (p50 {floor_['p50_ms']:.2f} ms, p99 "
              f"{floor_['p99_ms']:.2f} ms)  gatekeeper {gk['rps']:6.0f}/s (p50 {gk['p50_ms']:.2f} ms, p99 "
              f"{gk['p99_ms']:.2f} ms)  ratio {gk['rps'] / floor_['rps']:.2f}  server p50 "
              f"{gk['server_p50_ms']:.3f} ms p99 {gk['server_p99_ms']:.3f} ms  worker CPU per request "
              f"{floor_['cpu_us']:.0f} / {gk['cpu_us']:.0f} us")
        for name in [n for n in {**BREAKDOWN, **PAIRS} if n in found]:
            print(f"         {name}: {found[name]['rps']:6.0f}/s, ratio {found[name]['rps'] / floor_['rps']:.2f}, "
                  f"worker CPU per request {found[name]['cpu_us']:.0f} us")
        if args.db_pid is not None:
            print("         Postgres CPU per request: " + ", ".join(
                f"{name} {found[name]['db_cpu_us']:.0f} us" for name in found if name != "floor"))
    ratio = statistics.median(r["gatekeeper"]["rps"] / r["floor"]["rps"] for r in rounds)
    cpu_ratio = statistics.median(r["floor"]["cpu_us"] / r["gatekeeper"]["cpu_us"] for r in rounds)
    p99 = statistics.median(r["gatekeeper"]["server_p99_ms"] for r in rounds)
    print(f"median ratio to floor: {ratio:.2f} (target >= 0.70: {'met' if ratio >= 0.70 else 'NOT met'})")
    for name in [n for n in BREAKDOWN if n in rounds[0]]:
        share = statistics.median(r[name]["rps"] / r["floor"]["rps"] for r in rounds)
        cpu = statistics.median(r[name]["cpu_us"] for r in rounds)
        print(f"median ratio to floor, {name}: {share:.2f} (worker CPU {cpu:.0f} us per request)")
    print(f"median worker CPU per request, floor / gatekeeper: {cpu_ratio:.2f} (less sensitive to a noisy host)")
    if "bare SQL" in rounds[0]:
        ceiling = statistics.median(r["gatekeeper"]["rps"] / r["bare SQL"]["rps"] for r in rounds)
        print(f"median ratio to the bare-SQL ceiling: {ceiling:.2f} (guard rail >= 0.90: "
              f"{'met' if ceiling >= 0.90 else 'NOT met'})")
    if "pairs" in rounds[0]:
        pairs = statistics.median(r["pairs"]["rps"] for r in rounds)
        alone = statistics.median(r["gatekeeper"]["rps"] for r in rounds)
        print(f"median decision+outcome pairs/s: {pairs:.0f} against {alone:.0f} decisions/s alone "
              f"(worker CPU per pair {statistics.median(r['pairs']['cpu_us'] for r in rounds):.0f} us)")
    if args.servers:
        _report_servers(rounds)
    if args.db_pid is not None:
        print(f"median Postgres CPU per decision: "
              f"{statistics.median(r['gatekeeper']['db_cpu_us'] for r in rounds):.0f} us")
    print(f"median server-side p99 (histogram): {p99:.3f} ms (target < 1 ms: {'met' if p99 < 1 else 'NOT met'})")


def _report_servers(rounds: list[dict[str, dict[str, float]]]) -> None:
    """Print the floor and Gatekeeper under each WSGI server, and whether one beats gunicorn sync clearly."""
    base = statistics.median(r["gatekeeper"]["rps"] for r in rounds)
    base_p99 = statistics.median(r["gatekeeper"]["server_p99_ms"] for r in rounds)
    for server in SERVERS:
        suffix = "" if server == SERVERS[0] else f"@{server}"
        floor_, gk = (statistics.median(r[name + suffix]["rps"] for r in rounds) for name in APPS)
        cpu = statistics.median(r["gatekeeper" + suffix]["cpu_us"] for r in rounds)
        p99 = statistics.median(r["gatekeeper" + suffix]["server_p99_ms"] for r in rounds)
        client_p99 = statistics.median(r["gatekeeper" + suffix]["p99_ms"] for r in rounds)
        clear = gk >= 1.3 * base and p99 <= base_p99
        print(f"{server:17}: floor {floor_:6.0f}/s  gatekeeper {gk:6.0f}/s ({gk / base:.2f}x sync)  "
              f"server p99 {p99:.2f} ms  client p99 {client_p99:.1f} ms  worker CPU {cpu:.0f} us"
              + ("  <- clear gain (>= 1.3x at equal or better p99)" if clear and suffix else ""))


if __name__ == "__main__":
    main()
