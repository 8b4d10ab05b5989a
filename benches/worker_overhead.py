#!/usr/bin/env python3
"""A remote crew call (worker hosts, SPEC §12) against the same crew run locally.

    cargo build --release --bin live-crew --example echo_runner
    .venv/bin/python benches/worker_overhead.py

Per call: one compiled echo crew (`benches/fixtures/echo_runner.rs`, answers at once),
run by the scheduler itself (`--selector '^alpha$'`) or by one `live-crew worker`
(`--selector '^$'` on the scheduler: no crew runs there), in turns within each run on a
fresh `nats-server -js`. Events arrive live at RATE per second on one stream with
`slice_ms` SLICE_MS; each call's time from dispatch to outcome comes from the
scheduler's `live_crew::lag` debug log (`call_ms`), so the remote figure is the whole
trip: publish on LIVE_WORK, the worker's pull, its runner, the result on LIVE_DONE.

Redelivery: a Python crew that sleeps 2 s per call on two workers; the worker holding a
call is SIGKILLed, and the time until the other worker has the call is measured against
`nats.work_ack_wait_ms` (its default, 5000) + 1 s.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from nats_throughput import STREAMS, Server, now_ts  # noqa: E402
from throughput import echo_crews  # noqa: E402

import nats  # noqa: E402

SLICE_MS = 50


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


class Process:
    """A live-crew process whose stderr (JSON log lines) is collected on a thread."""

    def __init__(self, args: list[str], env: dict):
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.reader.join(timeout=5)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def health(binary: str, socket: str) -> dict:
    out = subprocess.run(
        [binary, "health", "--socket", socket], capture_output=True, text=True
    )
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return {}


def crew_state(binary: str, socket: str, crew: str) -> str | None:
    for status in health(binary, socket).get("crews", []):
        if status["crew"] == crew:
            return status["state"]
    return None


def wait_until(check, what: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while not check():
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


async def feed(url: str, rate: int, seconds: float) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    started = time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        event = {"ts": now_ts(), "kind": "tick", "stream_id": STREAMS[0], "payload": {"n": n}}
        await js.publish(f"live.{STREAMS[0]}.events", json.dumps(event).encode())
        n += 1
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
    await asyncio.sleep(1.0)
    await client.close()


def call_times(lines: list[str], crew: str) -> list[float]:
    times = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("msg") == "slice lag" and record.get("crew") == crew:
            times.append(record["call_ms"])
    return times


def run_calls(args, crews: str, remote: bool, scratch: str, env: dict) -> list[float]:
    server = Server(args.nats_server)
    sockets = tempfile.mkdtemp(dir=scratch)
    common = ["--nats", server.url, "--crews", crews]
    scheduler_env = dict(
        env,
        LIVE_CREW_LOG="warn,live_crew::lag=debug",
        LIVE_CREW_LOG_FORMAT="json",
        LIVE_CREW_CONTROL_SOCKET=os.path.join(sockets, "scheduler.sock"),
    )
    selector = "^$" if remote else "^alpha$"
    scheduler = Process(
        [args.bin, "run", *common, "--selector", selector, "--slice-ms", str(SLICE_MS)],
        scheduler_env,
    )
    worker = None
    if remote:
        worker_env = dict(env, LIVE_CREW_CONTROL_SOCKET=os.path.join(sockets, "worker.sock"))
        worker = Process([args.bin, "worker", *common, "--selector", "^alpha$"], worker_env)
    socket = scheduler_env["LIVE_CREW_CONTROL_SOCKET"]
    want = "remote" if remote else "ready"
    wait_until(lambda: crew_state(args.bin, socket, "alpha") == want, f"alpha {want}")
    asyncio.run(feed(server.url, args.rate, args.seconds))
    scheduler.stop()
    if worker:
        worker.stop()
    server.stop()
    return call_times(scheduler.lines, "alpha")


def redelivery(args, scratch: str, env: dict) -> float:
    """Seconds from SIGKILL of the worker holding a call to the other worker holding it."""
    crews = os.path.join(scratch, "slow")
    folder = os.path.join(crews, "slow")
    os.makedirs(folder)
    with open(os.path.join(folder, "runtime.yaml"), "w") as runtime:
        runtime.write(
            "crew: slow\ntriggers: ['*']\nrunner: {kind: python, module: \"handlers:react\"}\n"
            "context: {read: [], write: []}\n"
        )
    with open(os.path.join(folder, "handlers.py"), "w") as handlers:
        handlers.write(
            "import time\ndef react(events, ctx, deps):\n    time.sleep(2)\n"
            "    return [{'kind': 'done', 'payload': len(events)}]\n"
        )
    server = Server(args.nats_server)
    common = ["--nats", server.url, "--crews", crews]
    sockets = {name: os.path.join(scratch, f"{name}.sock") for name in ("s", "w1", "w2")}
    scheduler = Process(
        [args.bin, "run", *common, "--selector", "^$"],
        dict(env, LIVE_CREW_CONTROL_SOCKET=sockets["s"]),
    )
    workers = {
        name: Process(
            [args.bin, "worker", *common, "--selector", "^slow$"],
            dict(env, LIVE_CREW_CONTROL_SOCKET=sockets[name]),
        )
        for name in ("w1", "w2")
    }
    wait_until(lambda: crew_state(args.bin, sockets["s"], "slow") == "remote", "slow served")

    def in_flight(name: str) -> list[str]:
        return health(args.bin, sockets[name]).get("nats", {}).get("calls_in_flight") or []

    async def one_event() -> None:
        client = await nats.connect(server.url)
        event = {"ts": now_ts(), "kind": "tick", "stream_id": STREAMS[0], "payload": {}}
        await client.jetstream().publish(f"live.{STREAMS[0]}.events", json.dumps(event).encode())
        await client.close()

    asyncio.run(one_event())
    holder = None

    def taken() -> bool:
        nonlocal holder
        holder = next((name for name in workers if in_flight(name)), None)
        return holder is not None

    wait_until(taken, "a worker taking the call")
    call = in_flight(holder)[0]
    other = "w2" if holder == "w1" else "w1"
    workers[holder].kill()
    killed = time.perf_counter()
    wait_until(lambda: call in in_flight(other), "the call redelivered", timeout=60)
    took = time.perf_counter() - killed
    for process in (scheduler, workers[other]):
        process.stop()
    server.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.join(HERE, "..")
    parser.add_argument("--bin", default=os.path.join(root, "target", "release", "live-crew"))
    parser.add_argument("--nats-server", default=os.path.join(root, ".venv", "bin", "nats-server"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=200, help="live events per second")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    release = os.path.dirname(args.bin)
    scratch = tempfile.mkdtemp(prefix="live-crew-worker-bench-")
    env = dict(os.environ, LIVE_CREW_LOG="error")
    env.setdefault("LIVE_CREW_PYTHON", os.path.join(root, ".venv", "bin", "python"))
    crews = echo_crews(scratch, os.path.join(release, "examples", "echo_runner"), names=("alpha",))
    results = {"local": [], "remote": []}
    try:
        for _ in range(args.runs):
            for mode in results:
                results[mode].extend(run_calls(args, crews, mode == "remote", scratch, env))
        redelivered = redelivery(args, scratch, env)
    finally:
        shutil.rmtree(scratch)
    for mode, times in results.items():
        print(
            f"{mode}: {len(times)} calls, dispatch -> outcome p50 {percentile(times, 0.5):.2f} ms, "
            f"p99 {percentile(times, 0.99):.2f} ms"
        )
    local, remote = results["local"], results["remote"]
    print(
        f"added by the worker hop: p50 {percentile(remote, 0.5) - percentile(local, 0.5):.2f} ms, "
        f"p99 {percentile(remote, 0.99) - percentile(local, 0.99):.2f} ms"
    )
    print(f"redelivery after a worker's SIGKILL: {redelivered:.2f} s (ack_wait 5 s + 1 s: 6 s)")


if __name__ == "__main__":
    main()
