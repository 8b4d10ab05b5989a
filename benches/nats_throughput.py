#!/usr/bin/env python3
"""Distributed mode against a bare JetStream pipe, on loopback, runs interleaved.

    cargo build --release --bin live-crew --example echo_runner --example nats_pipe
    .venv/bin/python benches/nats_throughput.py

Throughput: EVENTS events over 4 streams wait in LIVE_EVENTS on a fresh `nats-server -js`
(from the venv), then one of these works through them, in turn within each run:
- `pipe`: the bare pipe (`benches/fixtures/nats_pipe.rs`: consume, publish one message
  per event with a message id, await the acks, ack the events);
- `pipe x3`: the same pipe publishing three messages per event, each with its own id:
  the least that three actions per event cost the server;
- `host`: `live-crew run --nats` with three compiled echo crews (the host alone: three
  actions per event, each slice committed to KV, published with ids and acknowledged);
- `host x1`: the same with one echo crew, so one action per event: the pipe's output;
- `host+py` (unless --no-python): the same with the three Python crews of
  `benches/crews`.
The figure is events per second from process start to the last output, for the pipe
as for the host. The host's time to its first action is its resume time (connect,
topology, consumer, crews).

Live: events published at RATE per second with the current time for SECONDS; for every
action, the time from its slice's close (its `ts`, the slice end, plus `grace_ms`) to
its arrival at a subscriber of `live.*.actions`: the wall-clock close, the call, the
commit (KV compare-and-swap, publish, ack) and the delivery together. The commit alone
is the host's `commit_seconds` histogram, read from its /metrics at the end.
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
import urllib.request

import nats

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from live_feed import bucket_quantile, histogram  # noqa: E402
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


def run_pipe(pipe: str, url: str, events: int, fanout: int) -> float:
    """From process start to exit, as the host is timed (the pipe's own figure leaves
    out its connect and consumer set-up)."""
    started = time.perf_counter()
    subprocess.run([pipe, url, str(events), str(fanout)], check=True, capture_output=True)
    return time.perf_counter() - started


def run_host(
    binary: str, crews: str, url: str, events: int, env: dict, crews_count: int = 3
) -> tuple[float, float]:
    started = time.perf_counter()
    host = subprocess.Popen(
        [binary, "run", "--nats", url, "--crews", crews, "-q"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    first = None
    want = crews_count * events
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
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=400, help="live events per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--no-python", action="store_true", help="leave out host+py")
    args = parser.parse_args()
    release = os.path.dirname(args.bin)
    pipe = os.path.join(release, "examples", "nats_pipe")
    scratch = tempfile.mkdtemp(prefix="live-crew-nats-bench-")
    echo_runner = os.path.join(release, "examples", "echo_runner")
    crews = echo_crews(scratch, echo_runner)
    one_crew = echo_crews(os.path.join(scratch, "one"), echo_runner, names=("alpha",))
    env = dict(os.environ, LIVE_CREW_LOG="error")
    env.setdefault("LIVE_CREW_PYTHON", os.path.join(root, ".venv", "bin", "python"))
    contenders = {
        "pipe": lambda url: run_pipe(pipe, url, args.events, 1),
        "pipe x3": lambda url: run_pipe(pipe, url, args.events, 3),
        "host": lambda url: run_host(args.bin, crews, url, args.events, env),
        "host x1": lambda url: run_host(args.bin, one_crew, url, args.events, env, crews_count=1),
    }
    if not args.no_python:
        python_crews = os.path.join(HERE, "crews")
        contenders["host+py"] = lambda url: run_host(args.bin, python_crews, url, args.events, env)
    results = {name: [] for name in contenders}
    first = []
    try:
        for _ in range(args.runs):
            for name, contender in contenders.items():
                server = Server(args.nats_server)
                asyncio.run(fill(server.url, args.events))
                result = contender(server.url)
                server.stop()
                if isinstance(result, tuple):
                    result, to_first = result
                    if name == "host":
                        first.append(to_first)
                results[name].append(result)
        server = Server(args.nats_server)
        metrics_addr = f"127.0.0.1:{free_port()}"
        host = subprocess.Popen(
            [args.bin, "run", "--nats", server.url, "--crews", crews, "-q",
             "--metrics-addr", metrics_addr],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)
        latencies = sorted(asyncio.run(live_latency(server.url, args.rate, args.seconds, 50)))
        with urllib.request.urlopen(f"http://{metrics_addr}/metrics") as response:
            commits = histogram(response.read().decode(), "commit_seconds")
        host.send_signal(signal.SIGTERM)
        host.wait(timeout=30)
        server.stop()
    finally:
        shutil.rmtree(scratch)
    pipe_best = args.events / min(results["pipe"])
    for name, times in results.items():
        times = sorted(times)
        best = args.events / times[0]
        print(
            f"{name}: {best:,.0f} events/s best ({times[0]:.2f} s), "
            f"{args.events / statistics.median(times):,.0f} median; "
            f"{best / pipe_best:.2f} of the pipe's best"
        )
    print(f"host: first action {statistics.median(first) * 1000:.0f} ms after start (median)")
    if latencies:
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(
            f"live: {len(latencies)} actions, slice close -> action on NATS: "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms"
        )
    if commits:
        print(
            f"live: {int(commits[-1][1])} commits, commit_seconds p50 <= "
            f"{bucket_quantile(commits, 0.5) * 1000:g} ms, p99 <= "
            f"{bucket_quantile(commits, 0.99) * 1000:g} ms"
        )


if __name__ == "__main__":
    main()
