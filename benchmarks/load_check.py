"""Load check for `biosyn serve` (not a test): starts the server on loopback in a subprocess, sends
concurrent POST /normalize requests for a bounded time, and prints throughput, latency and errors.

    .venv/bin/python benchmarks/load_check.py                      # sparse model, MEDIC 2012, 20 s
    .venv/bin/python benchmarks/load_check.py --model minilm --concurrency 32 --seconds 60
    .venv/bin/python benchmarks/load_check.py --poison 0.02        # 2 % of requests carry a lone surrogate
    .venv/bin/python benchmarks/load_check.py --overload           # 1,200 requests of 256 mentions, 64 at a time

Requests are "good" or "poisoned" (`--poison`: a lone surrogate in `text`, which must fail alone).
A good request that does not get 200 counts as failed, except a 503 under `--overload`, where
shedding is the point: there the figure to watch is the p99 latency of the admitted requests.

Mentions are drawn from the NCBI disease test set when the data folder has it. The client runs
on the same machine as the server and takes CPU from it, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# Runs the serve command's own parser and entry point, so this checks what `biosyn serve` runs.
SERVE = ("import argparse, sys; from biosyn.interfaces.server.cli import add_serve_parser, cmd_serve; "
         "p = argparse.ArgumentParser(); add_serve_parser(p.add_subparsers()); sys.exit(cmd_serve(p.parse_args()))")
FALLBACK_MENTIONS = ["breast and ovarian cancer", "HNPCC", "Wilson disease", "colorectal cancer", "ataxia telangiectasia",
                     "Duchenne muscular dystrophy", "myotonic dystrophy", "cystic fibrosis", "G6PD deficiency"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sparse")
    parser.add_argument("--index", help="a saved index folder (default: build or reuse a cached MEDIC one)")
    parser.add_argument("--data-dir", default=os.environ.get("BIOSYN_DATA_DIR") or str(REPO.parent / "shared" / "data"))
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to send requests (default 20)")
    parser.add_argument("--max-requests", type=int, default=50_000, help="stop after this many requests")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once")
    parser.add_argument("--mentions", type=int, default=4, help="mentions per request")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--poison", type=float, default=0.0, help="fraction of requests with a lone surrogate in `text`")
    parser.add_argument("--overload", action="store_true",
                        help="1,200 requests of 256 mentions, 64 in flight: sets --max-requests, --mentions, --concurrency")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="resend at once after a 503 instead of waiting as its Retry-After asks")
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for the server (index build)")
    args = parser.parse_args()
    if args.overload:
        args.max_requests, args.mentions, args.concurrency, args.seconds = 1200, 256, 64, max(args.seconds, 300)

    mentions = _mentions(args.data_dir)
    port = _free_port()
    command = [sys.executable, "-c", SERVE, "serve", "--model", args.model, "--data-dir", args.data_dir,
               "--port", str(port), *(["--index", args.index] if args.index else [])]
    server = subprocess.Popen(command, cwd=REPO)
    try:
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        _wait_until_up(url, server, args.startup_timeout)
        print(f"server up in {time.monotonic() - started:.1f} s; {args.concurrency} clients, {args.mentions} mentions "
              f"per request, k={args.k}, for {args.seconds:g} s or {args.max_requests} requests", flush=True)
        records, elapsed = _load(url, mentions, args)
        info = httpx.get(f"{url}/info").json()
    finally:
        server.terminate()
        server.wait(30)
    return _report(records, elapsed, args, info)


def _mentions(data_dir: str) -> list[str]:
    from biosyn.data.locate import CORPORA, data_file
    from biosyn.data.pubtator import read_pubtator

    try:
        docs = read_pubtator(data_file(CORPORA["ncbi-disease"].splits["test"], data_dir))
    except FileNotFoundError:
        return FALLBACK_MENTIONS
    return [m.text for d in docs for m in d.mentions]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server did not answer /health within {timeout:g} s")


def _load(url: str, mentions: list[str], args) -> tuple[list[tuple[bool, str, float]], float]:
    # One client process per 16 connections: a single httpx client stalls well before a
    # server does at higher concurrency, and would measure itself.
    shares = [min(16, args.concurrency - i) for i in range(0, args.concurrency, 16)]
    jobs = [(url, mentions, n, args.seconds, args.max_requests * n // args.concurrency, args.mentions, args.k,
             args.poison, args.timeout, not args.ignore_retry_after, seed) for seed, n in enumerate(shares)]
    start = time.perf_counter()
    with multiprocessing.Pool(len(jobs)) as pool:
        parts = pool.starmap(_client, jobs)
    return [r for part in parts for r in part], time.perf_counter() - start


def _client(*job) -> list[tuple[bool, str, float]]:
    return asyncio.run(_client_loop(*job))


async def _client_loop(url, mentions, concurrency, seconds, max_requests, per_request, k, poison, timeout, backoff, seed):
    """(poisoned, outcome, seconds) per request; the outcome is the status code, `timeout` or `error`."""
    records: list[tuple[bool, str, float]] = []
    started = 0
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker():
            nonlocal started
            while time.perf_counter() < deadline and started < max_requests:
                started += 1
                poisoned = rng.random() < poison
                body = {"mentions": rng.sample(mentions, per_request), "k": k}
                if poisoned:
                    body["text"] = "Wilson disease \ud800 (WD) is a disorder of copper transport."
                sent = time.perf_counter()
                try:
                    # json.dumps escapes the surrogate as \ud800, as a JavaScript client would send it.
                    response = await client.post("/normalize", content=json.dumps(body).encode(),
                                                 headers={"Content-Type": "application/json"})
                    outcome = str(response.status_code)
                    if response.status_code == 503 and backoff:  # as a well-behaved client does
                        await asyncio.sleep(float(response.headers.get("retry-after", 1)))
                except httpx.TimeoutException:
                    outcome = "timeout"
                except httpx.HTTPError:
                    outcome = "error"
                records.append((poisoned, outcome, time.perf_counter() - sent))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return records


def _report(records, elapsed: float, args, info: dict) -> int:
    """Prints the figures; returns 1 when a good request failed (or, under --overload, the p99 of admitted ones is 2 s or more)."""
    good = [(outcome, s) for poisoned, outcome, s in records if not poisoned]
    poisoned = [outcome for p, outcome, _ in records if p]
    ms = sorted(s * 1000 for outcome, s in good if outcome == "200")
    shed = sum(outcome == "503" for outcome, _ in good)
    failed = sum(outcome != "200" for outcome, _ in good) - (shed if args.overload else 0)
    print(f"{len(records)} requests in {elapsed:.1f} s; good: {_counts(o for o, _ in good)}"
          + (f"; poisoned: {_counts(poisoned)}" if poisoned else ""))
    print(f"good requests failed: {failed}" + (f" (503s, shed by admission control: {shed})" if args.overload else ""))
    if not ms:
        print("no request succeeded")
        return 1
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    batches = info["batches"]
    print(f"throughput: {len(ms) / elapsed:.1f} requests/s, {len(ms) * args.mentions / elapsed:.1f} mentions/s")
    print(f"latency of admitted requests: p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
    print(f"model calls: {batches['calls']}, {batches['mentions'] / max(batches['calls'], 1):.1f} mentions per call on average; "
          f"measured rate at the end {info['queue']['rate']:.0f} mentions/s")
    if os.environ.get("LOAD_DEBUG"):
        print("admitted latencies (ms):", [round(x) for x in ms])
    return 1 if failed or (args.overload and p99 >= 2000) else 0


def _counts(outcomes) -> str:
    return ", ".join(f"{n} × {o}" for o, n in sorted(Counter(outcomes).items()))


if __name__ == "__main__":
    sys.exit(main())
