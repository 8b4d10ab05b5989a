#!/usr/bin/env python3
"""Distributed mode against a bare JetStream pipe, on loopback, runs interleaved.

    cargo build --release --bin live-crew --example echo_runner --example nats_pipe
    .venv/bin/python benches/nats_throughput.py

Throughput: EVENTS events over 4 streams wait in LIVE_EVENTS on a fresh `nats-server -js`
(from the venv), then either the bare pipe (`benches/fixtures/nats_pipe.rs`: consume,
publish one message per event with a message id, await the acks, ack the events) or
`live-crew run --nats` with three compiled echo crews (the host alone: three actions per
event, each slice committed to KV, published with ids and acknowledged) works through
them; the figure is events per second from process start to the last output. The
host's time to its first action is its resume time (connect, topology, consumer, crews).

Live: events published at RATE per second with the current time for SECONDS; for every
action, the time from its slice's close (its `ts`, the slice end, plus `grace_ms`) to
its arrival at a subscriber of `live.*.actions`: the wall-clock close, the call, the
commit (KV compare-and-swap, publish, ack) and the delivery together.
"""

import argparse
import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import nats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from throughput import echo_crews  # noqa: E402

STREAMS = ["s0", "s1", "s2", "s3"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, binary: str):
        self.port = free_port()
        self.store = tempfile.mkdtemp(prefix="live-crew-nats-bench-")
        self.process = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.store],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"nats://127.0.0.1:{self.port}"
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.store, ignore_errors=True)


def now_ts() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


async def fill(url: str, events: int) -> None:
    """A backlog from an hour ago, one event per stream every 4 ms: the host works
    through it by event time, and its last slices are past when it has caught up."""
    client = await nats.connect(url)
    js = client.jetstream()
    await js.add_stream(name="LIVE_EVENTS", subjects=["live.*.events"])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    pending = []
    for n in range(events):
        stream = STREAMS[n % len(STREAMS)]
        ts = (start + datetime.timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")
        event = {"ts": ts, "kind": "tick", "stream_id": stream, "payload": {"n": n}}
        pending.append(js.publish(f"live.{stream}.events", json.dumps(event).encode()))
        if len(pending) == 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await client.close()


async def count(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        return (await client.jetstream().stream_info(stream)).state.messages
    except Exception:
        return 0
    finally:
        await client.close()


def run_pipe(pipe: str, url: str, events: int) -> float:
    out = subprocess.run([pipe, url, str(events)], check=True, capture_output=True, text=True)
    return float(out.stdout.strip())


def run_host(binary: str, crews: str, url: str, events: int, env: dict) -> tuple[float, float]:
    started = time.perf_counter()
    host = subprocess.Popen(
        [binary, "run", "--nats", url, "--crews", crews, "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first = None
    want = 3 * events
    deadline = time.time() + 300
    while True:
        done = asyncio.run(count(url, "LIVE_ACTIONS"))
        if done and first is None:
            first = time.perf_counter() - started
        if done >= want:
            break
        if time.time() > deadline:
            raise RuntimeError(f"only {done} of {want} actions")
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    host.send_signal(signal.SIGTERM)
    host.wait(timeout=30)
    return elapsed, first or elapsed


async def live_latency(url: str, rate: int, seconds: float, grace_ms: int) -> list[float]:
    client = await nats.connect(url)
    js = client.jetstream()
    arrivals = []

    async def on_action(message):
        action = json.loads(message.data)
        close = datetime.datetime.fromisoformat(action["ts"].replace("Z", "+00:00"))
        close += datetime.timedelta(milliseconds=grace_ms)
        arrived = datetime.datetime.now(datetime.timezone.utc)
        arrivals.append((arrived - close).total_seconds() * 1000)

    await client.subscribe("live.*.actions", cb=on_action)
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        stream = STREAMS[n % len(STREAMS)]
        event = {"ts": now_ts(), "kind": "tick", "stream_id": stream, "payload": {"n": n}}
        await js.publish(f"live.{stream}.events", json.dumps(event).encode())
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
    await asyncio.sleep(1.5)
    await client.close()
    return arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.join(HERE, "..")
    parser.add_argument("--bin", default=os.path.join(root, "target", "release", "live-crew"))
    parser.add_argument("--nats-server", default=os.path.join(root, ".venv", "bin", "nats-server"))
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=400, help="live events per second")
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    release = os.path.dirname(args.bin)
    pipe = os.path.join(release, "examples", "nats_pipe")
    scratch = tempfile.mkdtemp(prefix="live-crew-nats-bench-")
    crews = echo_crews(scratch, os.path.join(release, "examples", "echo_runner"))
    env = dict(os.environ, LIVE_CREW_LOG="error")
    results = {"pipe": [], "host": [], "first": []}
    try:
        for _ in range(args.runs):
            server = Server(args.nats_server)
            asyncio.run(fill(server.url, args.events))
            results["pipe"].append(run_pipe(pipe, server.url, args.events))
            server.stop()
            server = Server(args.nats_server)
            asyncio.run(fill(server.url, args.events))
            elapsed, first = run_host(args.bin, crews, server.url, args.events, env)
            results["host"].append(elapsed)
            results["first"].append(first)
            server.stop()
        server = Server(args.nats_server)
        host = subprocess.Popen(
            [args.bin, "run", "--nats", server.url, "--crews", crews, "-q"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        latencies = sorted(asyncio.run(live_latency(server.url, args.rate, args.seconds, 50)))
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=30)
        server.stop()
    finally:
        shutil.rmtree(scratch)
    for name in ("pipe", "host"):
        times = sorted(results[name])
        print(
            f"{name}: {args.events / times[0]:,.0f} events/s best ({times[0]:.2f} s), "
            f"{args.events / statistics.median(times):,.0f} median"
        )
    print(f"host: first action {statistics.median(results['first']) * 1000:.0f} ms after start (median)")
    if latencies:
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"live: {len(latencies)} actions, slice close -> action on NATS: "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms"
        )


if __name__ == "__main__":
    main()
