#!/usr/bin/env python3
"""The web page's cost to the host (SPEC §16): `/api/state` latency and host CPU.

    cargo build --release --bin live-crew --example echo_runner
    python3 benches/web_state.py

A live host (`--events -`, 10 ms slices, so that a run of SECONDS fills the host's call
history of 1000 slices) with 20 compiled echo crews is fed 200 events a second; each run
is done twice, interleaved: once with a browser's load (the page and `/api/state`
fetched every second, as the page does) and once without. Reported: the host's CPU time
per run (utime + stime of the host process, from /proc) as a share of one core, with and
without the page, and, at the end of the runs with the page, the latency of
`/api/state` (what the page asks for: the last 60 slices of each stream) over 200
requests with the whole history held, and of one answer with all of it
(`/api/state?slices=1000`).
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from throughput import echo_crews  # noqa: E402

CREWS = [f"crew{n:02}" for n in range(20)]
HZ = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def run(binary: str, crews: str, seconds: float, rate: int, slice_ms: int, with_page: bool,
        scratch: str):
    """One live run; returns (host CPU share of one core, /api/state latencies in ms)."""
    addr = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, LIVE_CREW_LOG="error",
               LIVE_CREW_CONTROL_SOCKET=os.path.join(scratch, f"c{time.time_ns()}.sock"))
    host = subprocess.Popen(
        [binary, "run", "--crews", crews, "--events", "-", "--slice-ms", str(slice_ms),
         "--metrics-addr", addr, "--output", os.devnull],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=env, text=True,
    )
    deadline = time.time() + 30
    while True:
        try:
            state = json.loads(get(f"http://{addr}/api/state"))
            if all(c["state"] == "ready" for c in state["health"]["crews"]) and state["health"]["crews"]:
                break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("the host did not get ready")
        time.sleep(0.05)
    stop = threading.Event()

    def browse() -> None:
        while not stop.is_set():
            get(f"http://{addr}/")
            get(f"http://{addr}/api/state")
            stop.wait(1.0)

    browser = threading.Thread(target=browse, daemon=True)
    if with_page:
        browser.start()
    cpu_before, started = cpu_seconds(host.pid), time.perf_counter()
    n = 0
    while time.perf_counter() - started < seconds:
        ts = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        host.stdin.write(json.dumps({"ts": ts, "kind": "tick", "stream_id": "s", "payload": {"n": n}}) + "\n")
        host.stdin.flush()
        n += 1
        time.sleep(max(0.0, started + n / rate - time.perf_counter()))
    share = (cpu_seconds(host.pid) - cpu_before) / (time.perf_counter() - started)
    stop.set()
    latencies = []
    if with_page:
        for _ in range(200):
            begun = time.perf_counter()
            body = get(f"http://{addr}/api/state")
            latencies.append((time.perf_counter() - begun) * 1000)
        shown = len(json.loads(body)["calls"])
        begun = time.perf_counter()
        history = json.loads(get(f"http://{addr}/api/state?slices=1000"))["calls"]
        whole = (time.perf_counter() - begun) * 1000
        slices = len({call["slice"] for call in history})
        print(f"  history: {len(history)} calls over {slices} slices; /api/state gives "
              f"{shown} calls; all of it in one answer took {whole:.1f} ms", file=sys.stderr)
    host.stdin.close()
    host.wait(timeout=30)
    return share, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.join(HERE, "..")
    parser.add_argument("--bin", default=os.path.join(root, "target", "release", "live-crew"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--slice-ms", type=int, default=10)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="live-crew-web-bench-")
    crews = echo_crews(scratch, os.path.join(os.path.dirname(args.bin), "examples", "echo_runner"),
                       names=CREWS)
    shares = {True: [], False: []}
    latencies = []
    try:
        for _ in range(args.runs):
            for with_page in (True, False):
                share, lat = run(args.bin, crews, args.seconds, args.rate, args.slice_ms,
                                 with_page, scratch)
                shares[with_page].append(share)
                latencies.extend(lat)
    finally:
        shutil.rmtree(scratch)
    latencies.sort()
    with_page, without = statistics.median(shares[True]), statistics.median(shares[False])
    print(f"host CPU, median of {args.runs}: {with_page * 100:.2f}% of a core with the page, "
          f"{without * 100:.2f}% without: {(with_page - without) * 100:+.2f} points")
    print(f"/api/state: p50 {latencies[len(latencies) // 2]:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)]:.2f} ms over {len(latencies)} requests")


if __name__ == "__main__":
    main()
