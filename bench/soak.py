"""``make soak``: 1,000 authenticated sockets and a few abusers, through the real nginx.

Two daphne workers (unix sockets, --proxy-headers) serve the example project behind
the nginx config from ``wsdeploy nginx`` with a throwaway TLS certificate, all on
loopback, on a private Redis. For ``--duration`` seconds (default 120):

- well-behaved clients (``--sockets``, default 1,000) each send an echo every few
  seconds and must get every answer, with no close;
- flooders send as fast as they can and must be throttled (``rate_limited``
  frames) and then closed with 4429;
- oversize senders send a frame above MAX_MESSAGE_BYTES and must be closed with 1009;
- bad tokens and cross-origin (session cookie from https://evil.example) attempts
  must be refused at the handshake (HTTP 403).

Pass criteria, printed at the end: zero unexpected closes of well-behaved clients;
every abusive client limited or closed with the documented code; no worker
restart; daphne RSS flat within 10% over the last half; every rejection matched
by exactly one security event in the workers' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

from bench.run import ROOT, free_port, rss_bytes, setup_django, wait_for_port  # noqa: E402


class Stats:
    def __init__(self) -> None:
        self.echoes = 0
        self.retried_1013 = 0
        self.unexpected = []
        self.rejections = 0  # what clients saw: error frames, closes, 403s
        self.abusers = {"flood": [], "oversize": [], "bad_token": [], "cross_origin": []}


async def well_behaved(url, ssl_context, token, stop_at, stats: Stats) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    for _attempt in range(5):
        try:
            await _converse(connect, url, ssl_context, token, stop_at, stats)
            return
        except ConnectionClosed as closed:
            if closed.rcvd is not None and closed.rcvd.code == 1013 and \
                    not getattr(closed, "answered", True):
                stats.retried_1013 += 1  # "try again later" at the handshake: do as told
                await asyncio.sleep(random.uniform(0.5, 2))
                continue
            stats.unexpected.append(f"{type(closed).__name__}: {closed}")
            return
        except Exception as error:  # any close or failure of a good client is a failure
            stats.unexpected.append(f"{type(error).__name__}: {error}")
            return


async def _converse(connect, url, ssl_context, token, stop_at, stats: Stats) -> None:
    async with connect(url, ssl=ssl_context, subprotocols=["wsops", token], proxy=None,
                       compression=None, open_timeout=30, ping_interval=None) as ws:
        answered = False
        try:
            await asyncio.sleep(random.uniform(0, 4))
            while time.monotonic() < stop_at:
                await ws.send(json.dumps({"action": "echo", "text": "ok"}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("type") != "echo":
                    stats.unexpected.append(f"reply {reply}")
                    return
                answered = True
                stats.echoes += 1
                await asyncio.sleep(random.uniform(2, 5))
        except Exception as error:
            error.answered = answered  # a 1013 after conversing is not a handshake refusal
            raise


async def flooder(url, ssl_context, token, stats: Stats) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, ssl=ssl_context, subprotocols=["wsops", token], proxy=None,
                       compression=None, open_timeout=30) as ws:
        try:
            while True:
                await ws.send(json.dumps({"action": "echo", "text": "flood"}))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                if reply.get("code") == "rate_limited":
                    stats.rejections += 1
        except ConnectionClosed:
            stats.rejections += 1
            stats.abusers["flood"].append(ws.close_code)


async def oversize(url, ssl_context, token, stats: Stats) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(url, ssl=ssl_context, subprotocols=["wsops", token], proxy=None,
                       compression=None, open_timeout=30) as ws:
        await ws.send("x" * 20000)
        try:
            await asyncio.wait_for(ws.recv(), 30)
        except ConnectionClosed:
            pass
        stats.rejections += 1
        stats.abusers["oversize"].append(ws.close_code)


async def refused_handshake(url, ssl_context, kind, options, stats: Stats) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        async with connect(url, ssl=ssl_context, proxy=None, open_timeout=30, **options):
            stats.abusers[kind].append("accepted")
    except InvalidStatus as refused:
        stats.rejections += 1
        stats.abusers[kind].append(refused.response.status_code)


async def attack_loop(url, ssl_context, session, stop_at, stats: Stats) -> None:
    while time.monotonic() < stop_at:
        await refused_handshake(url, ssl_context, "bad_token",
                                {"subprotocols": ["wsops", "wst_" + secrets.token_urlsafe(32)]},
                                stats)
        await refused_handshake(url, ssl_context, "cross_origin",
                                {"origin": "https://evil.example",
                                 "additional_headers": [("Cookie", f"sessionid={session}")]},
                                stats)
        await asyncio.sleep(2)


async def drive(args, url, ssl_context, fixtures, workers, rss_samples) -> Stats:
    stats = Stats()
    stop_at = time.monotonic() + args.duration
    token, session = fixtures["token"], fixtures["session"]

    async def sample_rss() -> None:
        while time.monotonic() < stop_at:
            rss_samples.append((time.monotonic(), [rss_bytes(w.pid) for w in workers]))
            await asyncio.sleep(2)

    good = []
    for index in range(args.sockets):  # ramp up: 25 new sockets every half second
        good.append(asyncio.create_task(well_behaved(url, ssl_context, token, stop_at, stats)))
        if index % 25 == 24:
            await asyncio.sleep(0.5)
    abuse = [flooder(url, ssl_context, token, stats) for _ in range(5)]
    abuse += [oversize(url, ssl_context, token, stats) for _ in range(5)]
    await asyncio.gather(sample_rss(), attack_loop(url, ssl_context, session, stop_at, stats),
                         *abuse, *good)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--sockets", type=int, default=1000)
    args = parser.parse_args()

    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    tmp = Path(tempfile.mkdtemp(prefix="wsops-soak-"))
    processes: list[subprocess.Popen] = []
    try:
        redis_port = free_port()
        processes.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL))
        wait_for_port(redis_port)
        https_port, http_port = free_port(), free_port()
        env = {**os.environ, "BENCH_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "BENCH_DB": str(tmp / "soak.sqlite3"),
               "SOAK_ORIGIN": f"https://localhost:{https_port}",
               "DJANGO_SETTINGS_MODULE": "bench.soak_settings",
               "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example")])}
        fixtures = setup_django(env)

        from cryptography.hazmat.primitives import serialization

        from wsops.deploy.certs import _pem_key, mint
        from wsops.deploy.nginx import find_nginx, minimal_conf

        leaf, key, ca = mint(["localhost"])
        (tmp / "fullchain.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                                            + ca.public_bytes(serialization.Encoding.PEM))
        (tmp / "privkey.pem").write_bytes(_pem_key(key))
        (tmp / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        sockets = [tmp / f"daphne-{n}.sock" for n in (1, 2)]
        logs = [tmp / f"daphne-{n}.log" for n in (1, 2)]
        workers = []
        for sock, log in zip(sockets, logs, strict=True):
            with log.open("wb") as out:
                workers.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "daphne"), "-u", str(sock),
                     "--proxy-headers", "chatproject.asgi:application"],
                    cwd=ROOT / "example", env=env, stdout=out, stderr=subprocess.STDOUT))
        processes.extend(workers)
        deadline = time.monotonic() + 30
        while not all(s.exists() for s in sockets) and time.monotonic() < deadline:
            time.sleep(0.1)
        (tmp / "logs").mkdir()
        (tmp / "temp").mkdir()
        subprocess.run(
            [sys.executable, "manage.py", "wsdeploy", "nginx", "--domain", "localhost",
             "--upstream", f"unix:{sockets[0]}", "--upstream", f"unix:{sockets[1]}",
             "--http-port", str(http_port), "--https-port", str(https_port), "--log-dir",
             str(tmp / "logs"), "--cert", str(tmp / "fullchain.pem"), "--key",
             str(tmp / "privkey.pem"), "--output", str(tmp / "site.conf")],
            cwd=ROOT / "example", env=env, check=True, capture_output=True)
        conf = tmp / "nginx.conf"
        conf.write_text(minimal_conf(tmp, tmp / "site.conf",
                                     run_as="root root" if os.geteuid() == 0 else None,
                                     connections=8192))
        processes.append(subprocess.Popen([find_nginx(), "-p", str(tmp), "-c", str(conf), "-g",
                                           "daemon off;"]))
        wait_for_port(https_port)

        ssl_context = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
        url = f"wss://localhost:{https_port}/ws/chat/soak/"
        rss_samples: list = []
        print(f"soak: {args.sockets} sockets for {args.duration:.0f}s through nginx to two "
              "daphne workers...")
        stats = asyncio.run(drive(args, url, ssl_context, fixtures, workers, rss_samples))
        time.sleep(1)
        texts = [log.read_text(errors="replace") for log in logs]
        events = sum(text.count(" refused: ") for text in texts)
        for text in texts:  # show the first server-side error, if any
            marker = "Exception inside application"
            if marker in text:
                block = text[text.index(marker):]
                lines = [ln for ln in block.splitlines() if not ln.startswith("127.0.0.1")]
                end = next((i for i, ln in enumerate(lines[1:], 1)
                            if ln and not ln.startswith((" ", "Traceback", "The above",
                                                         "During handling")) and ":" in ln
                            and not ln.startswith("asyncio")), len(lines))
                print("worker error:\n" + "\n".join(lines[max(0, end - 30):end + 1]))
                break
        return report(stats, workers, rss_samples, events)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(stats: Stats, workers, rss_samples, events: int) -> int:
    half = rss_samples[len(rss_samples) // 2:]
    flat = True
    for index in range(len(workers)):
        values = [sample[1][index] for sample in half]
        if values and (max(values) - min(values)) / min(values) > 0.10:
            flat = False
    checks = {
        "zero unexpected closes of well-behaved clients": not stats.unexpected,
        "floods closed with 4429": bool(stats.abusers["flood"])
        and all(c == 4429 for c in stats.abusers["flood"]),
        "oversized frames closed with 1009": bool(stats.abusers["oversize"])
        and all(c == 1009 for c in stats.abusers["oversize"]),
        "bad tokens refused (403)": bool(stats.abusers["bad_token"])
        and all(c == 403 for c in stats.abusers["bad_token"]),
        "cross-origin attempts refused (403)": bool(stats.abusers["cross_origin"])
        and all(c == 403 for c in stats.abusers["cross_origin"]),
        "no worker restart": all(w.poll() is None for w in workers),
        "RSS flat within 10% over the last half": flat,
        f"every rejection ({stats.rejections}) matched by one security event ({events})":
            stats.rejections == events,
    }
    print(f"\nechoes answered: {stats.echoes}; handshakes retried after 1013 (Redis slower "
          f"than REDIS_TIMEOUT under the load): {stats.retried_1013}")
    if stats.unexpected:
        print(f"unexpected: {len(stats.unexpected)}, e.g. {stats.unexpected[:3]}")
    if half:
        print("daphne RSS over the last half (MiB): " + ", ".join(
            f"worker {i + 1}: {min(s[1][i] for s in half) / 2**20:.1f}-"
            f"{max(s[1][i] for s in half) / 2**20:.1f}" for i in range(len(workers))))
    for name, passed in checks.items():
        print(f"  [{'PASS' if passed else 'FAIL'}] {name}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
