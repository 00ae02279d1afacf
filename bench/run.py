"""``make bench``: what the security layer costs, measured on real daphne and Redis.

One run starts a private redis-server and, one at a time, a daphne process per
application in ``bench/benchapp.py``, then measures:

- handshakes/s: bare; Channels' AllowedHostsOriginValidator(AuthMiddlewareStack)
  with a session cookie; SecureWebsocketStack with a token (subprotocol), a
  ticket, and a session cookie. Ratios are to bare, from the same run.
- echo round trips/s over 50 concurrent sockets: bare AsyncJsonWebsocketConsumer
  vs SecureJsonWebsocketConsumer (size cap, form, per-connection throttle), and
  the same with the per-user shared throttle (one Redis round trip per message).
- daphne CPU per operation and Redis round trips per handshake and per message.
- shared limiter decisions: wsops' one EVALSHA vs django-ratelimit's
  is_ratelimited (django-redis) vs a bare PING, on the same Redis.
- daphne RSS per idle connection at 1,000 connections, bare vs wsops.
- push fan-out: from ``wsops.push.asend_to_user`` to delivery on every one of
  1,000 sockets of one user spread over 2 secure workers.
- what Prometheus metrics cost: every wsops daphne records them in multiprocess
  mode (``PROMETHEUS_MULTIPROC_DIR``, as ``wsdeploy daphne`` runs it), and one more
  measures token handshakes and echo with ``WSOPS["METRICS"] = False``; the ratio
  is daphne CPU per operation with metrics over without (1.00: free).

Steadier numbers: daphne and the load generator are pinned to different cores where
the machine has two or more (recorded in the JSON), every variant is measured
``--runs`` times (default 3) in interleaved rounds, and the table gives the median
and the range. Absolute rates are printed; the targets are judged on daphne CPU
per operation, bare's over the variant's, per run and on the median.

It prints a table and writes JSON (``--output``), including which targets were met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def core_plan() -> dict[str, list[int]] | None:
    """Cores for daphne and for the load generator, apart where the machine has two or
    more: sharing one core makes the two compete and the ratios swing between runs."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    if len(cores) < 2:
        return None
    return {"daphne": cores[-1:], "load_generator": cores[:-1]}


PINNING = core_plan()


class Daphne:
    def __init__(self, application: str, env: dict[str, str]):
        self.port = free_port()
        daphne_cores = PINNING["daphne"] if PINNING else None
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "daphne"), "-b", "127.0.0.1", "-p",
             str(self.port), f"bench.benchapp:{application}"],
            cwd=ROOT / "example", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=(lambda: os.sched_setaffinity(0, daphne_cores)) if daphne_cores else None)
        wait_for_port(self.port)

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/echo/"

    def round_trips(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/bench/stats") as response:
            return json.loads(response.read())["redis"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: nothing left to measure
            self.process.kill()
            self.process.wait()


class Measure:
    """CPU seconds of daphne and its Redis round trips over a block of work."""

    def __init__(self, server: Daphne):
        self.server = server

    def __enter__(self):
        self.cpu, self.trips, self.started = (cpu_seconds(self.server.process.pid),
                                              self.server.round_trips(), time.monotonic())
        return self

    def __exit__(self, *exc):
        self.elapsed = time.monotonic() - self.started
        self.cpu = cpu_seconds(self.server.process.pid) - self.cpu
        self.trips = self.server.round_trips() - self.trips


async def handshakes(url: str, options, duration: float, concurrency: int = 16) -> int:
    from websockets.asyncio.client import connect

    done = 0
    stop_at = time.monotonic() + duration

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            kwargs = options()
            async with connect(url, proxy=None, compression=None, **kwargs) as ws:
                if "subprotocols" in kwargs and ws.subprotocol != "wsops":
                    raise RuntimeError("the wsops subprotocol was not answered")
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def echo(url: str, options, duration: float, sockets: int = 50) -> int:
    from websockets.asyncio.client import connect

    message = json.dumps({"action": "echo", "text": "hello, bench"})
    done = 0
    connections = [await connect(url, proxy=None, compression=None, **options())
                   for _ in range(sockets)]
    stop_at = time.monotonic() + duration

    async def worker(ws) -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            await ws.send(message)
            reply = await ws.recv()
            if '"echo"' not in reply:
                raise RuntimeError(f"unexpected reply {reply}")
            done += 1

    await asyncio.gather(*(worker(ws) for ws in connections))
    for ws in connections:
        await ws.close()
    return done


async def idle_rss(url: str, options, count: int, pid: int) -> float:
    from websockets.asyncio.client import connect

    await asyncio.sleep(0.5)
    before = rss_bytes(pid)
    connections = []
    for _ in range(count):
        connections.append(await connect(url, proxy=None, compression=None, **options()))
    await asyncio.sleep(1.0)
    after = rss_bytes(pid)
    for ws in connections:
        await ws.close()
    return (after - before) / count


async def push_fanout(urls: list[str], options, sockets: int, rounds: int,
                      user_id: object) -> dict[str, float]:
    """ms from ``asend_to_user`` until each of ``sockets`` (spread over ``urls``) has the push."""
    from websockets.asyncio.client import connect

    from wsops import push

    connections = [await connect(urls[index % len(urls)], proxy=None, compression=None,
                                 **options()) for index in range(sockets)]
    times, asked = [], 0
    for number in range(rounds):
        text = f"push {number}"

        async def delivered(ws, text: str = text) -> None:
            if (got := await ws.recv()) != text:
                raise RuntimeError(f"unexpected frame {got!r}")

        waiting = [asyncio.ensure_future(delivered(ws)) for ws in connections]
        started = time.perf_counter()
        asked = await push.asend_to_user(user_id, {"type": "bench.push", "text": text})
        await asyncio.gather(*waiting)
        times.append((time.perf_counter() - started) * 1000)
    for ws in connections:
        await ws.close()
    return {"ms": summary(times)["median"], "workers_asked": asked, "sockets": sockets}


def setup_django(env: dict[str, str]) -> dict[str, object]:
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from wsops import tokens

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password="bench")
    _, secret = tokens.issue(user, name="bench")
    client = Client()
    client.force_login(user)
    return {"user": user, "token": secret, "session": client.cookies["sessionid"].value}


def limiter_bench(redis_url: str, decisions: int) -> dict[str, float]:
    """µs per decision, sequential: wsops (EVALSHA) vs django-ratelimit vs PING."""
    import redis as redis_lib
    from django.test import RequestFactory
    from django_ratelimit.core import is_ratelimited

    from wsops.limits.engine import Limit, RedisLimiter
    from wsops.limits.keys import rate_key
    from wsops.units import Rate

    client = redis_lib.from_url(redis_url)

    def calls() -> dict[str, int]:
        return {k.removeprefix("cmdstat_"): v["calls"]
                for k, v in client.info("commandstats").items()}

    async def wsops_decisions() -> float:
        limiter = RedisLimiter()
        limit = (Limit(rate_key("bench", "user", "1"), Rate(10**9, 60)),)
        await limiter.admit(limits=limit)
        started = time.perf_counter()
        for _ in range(decisions):
            await limiter.admit(limits=limit)
        return time.perf_counter() - started

    async def pings() -> float:
        import redis.asyncio

        aclient = redis.asyncio.from_url(redis_url)
        await aclient.ping()
        started = time.perf_counter()
        for _ in range(decisions):
            await aclient.ping()
        elapsed = time.perf_counter() - started
        await aclient.aclose()
        return elapsed

    def wsops_sync_decisions() -> float:
        """The same script through the blocking client django-ratelimit uses."""
        from wsops.limits.engine import ADMIT

        key = rate_key("bench", "user", "2")
        client.script_load(ADMIT.source)
        started = time.perf_counter()
        for _ in range(decisions):
            client.evalsha(ADMIT.sha, 1, key, 0, 1, 0, 0, "", 10**9, 60000)
        return time.perf_counter() - started

    def sync_pings() -> float:
        started = time.perf_counter()
        for _ in range(decisions):
            client.ping()
        return time.perf_counter() - started

    request = RequestFactory().get("/")
    request.user = type("U", (), {"is_authenticated": True, "pk": 1})()

    def django_decisions() -> float:
        is_ratelimited(request, group="bench", key="user", rate="1000000000/m", increment=True)
        started = time.perf_counter()
        for _ in range(decisions):
            is_ratelimited(request, group="bench", key="user", rate="1000000000/m",
                           increment=True)
        return time.perf_counter() - started

    # Command counts from one pass of each; timings: the best of three interleaved
    # passes (a shared 2-core machine adds noise that only ever makes things slower).
    before = calls()
    django_elapsed = django_decisions()
    middle = calls()
    wsops_elapsed = asyncio.run(wsops_decisions())
    after = calls()
    django_commands = sum(middle.values()) - sum(before.values()) - 1
    wsops_top_level = after.get("evalsha", 0) - middle.get("evalsha", 0)
    ping_elapsed = asyncio.run(pings())
    wsops_sync_elapsed = wsops_sync_decisions()
    sync_ping_elapsed = sync_pings()
    for _ in range(2):
        django_elapsed = min(django_elapsed, django_decisions())
        wsops_elapsed = min(wsops_elapsed, asyncio.run(wsops_decisions()))
        ping_elapsed = min(ping_elapsed, asyncio.run(pings()))
        wsops_sync_elapsed = min(wsops_sync_elapsed, wsops_sync_decisions())
        sync_ping_elapsed = min(sync_ping_elapsed, sync_pings())
    return {
        "decisions": decisions,
        "wsops_us": wsops_elapsed / decisions * 1e6,
        "django_ratelimit_us": django_elapsed / decisions * 1e6,
        "ping_us": ping_elapsed / decisions * 1e6,
        "wsops_sync_us": wsops_sync_elapsed / decisions * 1e6,
        "sync_ping_us": sync_ping_elapsed / decisions * 1e6,
        "wsops_round_trips_per_decision": (wsops_top_level - 1) / decisions,
        "django_ratelimit_commands_per_decision": django_commands / decisions,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="Seconds per measurement.")
    parser.add_argument("--idle", type=int, default=1000, help="Idle connections for RSS.")
    parser.add_argument("--decisions", type=int, default=5000, help="Limiter decisions.")
    parser.add_argument("--runs", type=int, default=3,
                        help="Rounds of every variant, interleaved; medians and ranges.")
    parser.add_argument("--push-sockets", type=int, default=1000,
                        help="Sockets of one user for the push fan-out (over 2 workers).")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = parser.parse_args()
    if PINNING:
        os.sched_setaffinity(0, PINNING["load_generator"])

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    tmp = Path(tempfile.mkdtemp(prefix="wsops-bench-"))
    redis_port = free_port()
    redis_server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL)
    wait_for_port(redis_port)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    (tmp / "metrics").mkdir()
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_DB": str(tmp / "bench.sqlite3"),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
           "DJANGO_SETTINGS_MODULE": "bench.settings",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example")])}
    try:
        fixtures = setup_django(env)
        runs = []
        for number in range(1, args.runs + 1):
            print(f"run {number} of {args.runs} ...", flush=True)
            runs.append(run_all(args, env, fixtures, redis_url))
    finally:
        redis_server.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    report(runs, args.output)
    return 0


def run_all(args, env, fixtures, redis_url) -> dict:
    from wsops import tickets

    token, session = fixtures["token"], fixtures["session"]
    origin = "http://127.0.0.1"

    def plain():
        return {}

    def with_token():
        return {"subprotocols": ["wsops", token]}

    def with_session():
        return {"origin": origin, "additional_headers": [("Cookie", f"sessionid={session}")]}

    ticket_pool: list[str] = []

    def with_ticket():
        return {"subprotocols": ["wsops", ticket_pool.pop()]}

    results: dict = {"handshakes": {}, "echo": {}, "cpu_ms": {}, "redis_round_trips": {},
                     "rss_per_connection_bytes": {}}

    def measure_handshakes(server: Daphne, name: str, options) -> None:
        asyncio.run(handshakes(server.url(), options, 0.5))  # warm up
        with Measure(server) as m:
            count = asyncio.run(handshakes(server.url(), options, args.duration))
        results["handshakes"][name] = count / m.elapsed
        results["cpu_ms"][f"handshake {name}"] = m.cpu / count * 1000
        results["redis_round_trips"][f"handshake {name}"] = m.trips / count

    def measure_echo(server: Daphne, name: str, options) -> None:
        with Measure(server) as m:
            count = asyncio.run(echo(server.url(), options, args.duration))
        results["echo"][name] = count / m.elapsed
        results["cpu_ms"][f"echo {name}"] = m.cpu / count * 1000
        results["redis_round_trips"][f"message {name}"] = m.trips / count

    server = Daphne("bare", env)
    try:
        measure_handshakes(server, "bare", plain)
        measure_echo(server, "bare", plain)
        results["rss_per_connection_bytes"]["bare"] = asyncio.run(
            idle_rss(server.url(), plain, args.idle, server.process.pid))
    finally:
        server.stop()

    server = Daphne("channels_stack", env)
    try:
        measure_handshakes(server, "channels session", with_session)
    finally:
        server.stop()

    server = Daphne("secure", env)
    try:
        measure_handshakes(server, "wsops token", with_token)
        expected = int(results["handshakes"]["wsops token"] * (args.duration + 1) * 1.5) + 200
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.get(username="bench")
        ticket_pool.extend(tickets.issue(user)[0] for _ in range(expected))
        measure_handshakes(server, "wsops ticket", with_ticket)
        measure_handshakes(server, "wsops session", with_session)
        measure_echo(server, "wsops", with_token)
        results["rss_per_connection_bytes"]["wsops"] = asyncio.run(
            idle_rss(server.url(), with_token, args.idle, server.process.pid))
    finally:
        server.stop()

    server = Daphne("secure", {**env, "BENCH_USER_MESSAGE": "1"})
    try:
        measure_echo(server, "wsops + user_message", with_token)
    finally:
        server.stop()

    workers = [Daphne("secure", env) for _ in range(2)]
    try:
        results["push"] = asyncio.run(push_fanout(
            [w.url() for w in workers], with_token, args.push_sockets, 5,
            fixtures["user"].pk))
    finally:
        for worker in workers:
            worker.stop()

    server = Daphne("secure", {**env, "BENCH_METRICS": "0"})
    try:
        measure_handshakes(server, "wsops token, no metrics", with_token)
        measure_echo(server, "wsops, no metrics", with_token)
    finally:
        server.stop()

    results["limiter"] = limiter_bench(redis_url, args.decisions)
    return results


# Issue 15's targets, judged on daphne CPU per operation (bare's / the variant's), so the
# load generator's own share of the machine does not move them.
TARGETS = {
    "token handshake >= 0.85x bare, by CPU": ("handshake wsops token", 0.85),
    "ticket handshake >= 0.7x bare, by CPU": ("handshake wsops ticket", 0.7),
    "session handshake cheaper than Channels' session stack, by CPU":
        ("session vs channels", 1.0),
    "secured echo >= 1.6x bare, by CPU": ("echo wsops", 1.6),
    "secured echo with user_message >= 1.4x bare, by CPU": ("echo wsops + user_message", 1.4),
}


def figures(run: dict) -> dict[str, float]:
    """One run's ratios: CPU ratios to bare (higher is better), RSS and limiter ratios."""
    cpu = run["cpu_ms"]
    rss, limiter = run["rss_per_connection_bytes"], run["limiter"]
    return {
        "handshake wsops token": cpu["handshake bare"] / cpu["handshake wsops token"],
        "handshake wsops ticket": cpu["handshake bare"] / cpu["handshake wsops ticket"],
        "handshake wsops session": cpu["handshake bare"] / cpu["handshake wsops session"],
        "session vs channels": cpu["handshake channels session"]
        / cpu["handshake wsops session"],
        "echo wsops": cpu["echo bare"] / cpu["echo wsops"],
        "echo wsops + user_message": cpu["echo bare"] / cpu["echo wsops + user_message"],
        "rss wsops / bare": rss["wsops"] / rss["bare"],
        "decision / PING": limiter["wsops_us"] / limiter["ping_us"],
        "metrics on / off, handshake": cpu["handshake wsops token"]
        / cpu["handshake wsops token, no metrics"],
        "metrics on / off, echo": cpu["echo wsops"] / cpu["echo wsops, no metrics"],
    }


def met(ratios: dict[str, float]) -> dict[str, bool]:
    verdicts = {name: ratios[key] >= floor for name, (key, floor) in TARGETS.items()}
    verdicts["RSS per idle socket <= 1.2x bare"] = ratios["rss wsops / bare"] <= 1.2
    verdicts["shared decision <= 1.2x a PING (asyncio)"] = ratios["decision / PING"] <= 1.2
    return verdicts


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1]}


def report(runs: list[dict], output: str) -> None:
    per_run = [figures(run) for run in runs]
    ratios = {name: summary([f[name] for f in per_run]) for name in per_run[0]}
    absolute = {
        section: {name: summary([run[section][name] for run in runs]) for name in runs[0][section]}
        for section in ("handshakes", "echo", "cpu_ms", "redis_round_trips",
                        "rss_per_connection_bytes")}
    absolute["limiter"] = {name: summary([run["limiter"][name] for run in runs])
                           for name in runs[0]["limiter"]}
    absolute["push_ms"] = summary([run["push"]["ms"] for run in runs])
    verdicts = [met(f) for f in per_run]
    targets = {name: {"median": met({k: v["median"] for k, v in ratios.items()})[name],
                      "runs": [v[name] for v in verdicts]} for name in verdicts[0]}
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "processor": _cpu_model(),
               "pinning": PINNING}
    document = {"runs": runs, "ratios": ratios, "absolute": absolute, "targets": targets,
                "machine": machine, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(document, indent=2))

    def spread(value: dict[str, float], digits: int = 2) -> str:
        return (f"{value['median']:.{digits}f} ({value['min']:.{digits}f}-"
                f"{value['max']:.{digits}f})")

    pins = (f"daphne on cores {PINNING['daphne']}, load on {PINNING['load_generator']}"
            if PINNING else "not pinned")
    print(f"\nwsops bench on {machine['processor']} ({machine['cpus']} cores, {pins}), "
          f"Python {machine['python']}; {len(runs)} interleaved runs: median (min-max)\n")
    print(f"{'handshakes':<26}{'per s':>22}{'daphne CPU ms':>22}{'Redis trips':>13}")
    for name, rate in absolute["handshakes"].items():
        print(f"{name:<26}{spread(rate, 0):>22}"
              f"{spread(absolute['cpu_ms'][f'handshake {name}']):>22}"
              f"{absolute['redis_round_trips'][f'handshake {name}']['median']:>13.2f}")
    print(f"\n{'echo (50 sockets)':<26}{'per s':>22}{'daphne CPU ms':>22}{'Redis trips':>13}")
    for name, rate in absolute["echo"].items():
        print(f"{name:<26}{spread(rate, 0):>22}"
              f"{spread(absolute['cpu_ms'][f'echo {name}'], 3):>22}"
              f"{absolute['redis_round_trips'][f'message {name}']['median']:>13.2f}")
    limiter = absolute["limiter"]
    print(f"\nshared limiter (sequential, {runs[0]['limiter']['decisions']} decisions), us")
    for key, label in (("wsops_us", "wsops, asyncio"), ("ping_us", "PING, asyncio"),
                       ("django_ratelimit_us", "django-ratelimit"),
                       ("wsops_sync_us", "wsops, blocking"), ("sync_ping_us", "PING, blocking")):
        print(f"  {label:<20}{spread(limiter[key], 1):>24}")
    rss = absolute["rss_per_connection_bytes"]
    print(f"\nRSS per idle connection, KiB: bare {rss['bare']['median'] / 1024:.1f}, "
          f"wsops {rss['wsops']['median'] / 1024:.1f}")
    fanout = runs[0]["push"]
    print(f"\npush fan-out to {fanout['sockets']} sockets of one user on "
          f"{fanout['workers_asked']} workers (median of 5 pushes per run), ms: "
          f"{spread(absolute['push_ms'], 1)}")
    print("\nratios (bare's daphne CPU per operation / the variant's; RSS, decision and "
          "metrics on / off: lower is better)")
    for name, value in ratios.items():
        print(f"  {name:<28}{spread(value):>22}")
    print("\ntargets (median; per run)")
    for name, verdict in targets.items():
        runs_met = "".join("+" if ok else "-" for ok in verdict["runs"])
        print(f"  [{'met' if verdict['median'] else 'MISSED'}] {name}  runs: {runs_met}")
    print(f"\nJSON: {output}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
