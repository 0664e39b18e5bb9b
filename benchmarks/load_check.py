"""Load check for `biosyn serve` (not a test): starts the server on loopback in a subprocess, sends
concurrent POST /normalize requests for a bounded time, and prints throughput, latency and errors.

    .venv/bin/python benchmarks/load_check.py                      # sparse model, MEDIC 2012, 20 s
    .venv/bin/python benchmarks/load_check.py --model minilm --concurrency 32 --seconds 60

Mentions are drawn from the NCBI disease test set when the data folder has it. The client runs
on the same machine as the server and takes CPU from it, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import socket
import statistics
import subprocess
import sys
import time
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
    parser.add_argument("--startup-timeout", type=float, default=600.0, help="seconds to wait for the server (index build)")
    args = parser.parse_args()

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
        latencies, errors, elapsed = _load(url, mentions, args)
        info = httpx.get(f"{url}/info").json()
    finally:
        server.terminate()
        server.wait(30)
    _report(latencies, errors, elapsed, args.mentions, info)
    return 1 if errors else 0


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


def _load(url: str, mentions: list[str], args) -> tuple[list[float], int, float]:
    # One client process per 16 connections: a single httpx client stalls well before a
    # server does at higher concurrency, and would measure itself.
    shares = [min(16, args.concurrency - i) for i in range(0, args.concurrency, 16)]
    jobs = [(url, mentions, n, args.seconds, args.max_requests * n // args.concurrency, args.mentions, args.k, seed)
            for seed, n in enumerate(shares)]
    start = time.perf_counter()
    with multiprocessing.Pool(len(jobs)) as pool:
        parts = pool.starmap(_client, jobs)
    return [x for lat, _ in parts for x in lat], sum(e for _, e in parts), time.perf_counter() - start


def _client(url, mentions, concurrency, seconds, max_requests, per_request, k, seed) -> tuple[list[float], int]:
    return asyncio.run(_client_loop(url, mentions, concurrency, seconds, max_requests, per_request, k, seed))


async def _client_loop(url, mentions, concurrency, seconds, max_requests, per_request, k, seed):
    latencies: list[float] = []
    errors = 0
    rng = random.Random(seed)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline and len(latencies) + errors < max_requests:
                body = {"mentions": rng.sample(mentions, per_request), "k": k}
                sent = time.perf_counter()
                try:
                    response = await client.post("/normalize", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - sent)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors


def _report(latencies: list[float], errors: int, elapsed: float, per_request: int, info: dict) -> None:
    if not latencies:
        print(f"no request succeeded ({errors} errors)")
        return
    ms = sorted(x * 1000 for x in latencies)
    p99 = statistics.quantiles(ms, n=100)[98] if len(ms) > 1 else ms[0]
    batches = info["batches"]
    print(f"requests: {len(ms)} ok, {errors} errors in {elapsed:.1f} s")
    print(f"throughput: {len(ms) / elapsed:.1f} requests/s, {len(ms) * per_request / elapsed:.1f} mentions/s")
    print(f"latency: p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
    print(f"model calls: {batches['calls']}, {batches['mentions'] / max(batches['calls'], 1):.1f} mentions per call on average")


if __name__ == "__main__":
    sys.exit(main())
