#!/usr/bin/env python3
"""Hot reload timing (SPEC §15): how soon a saved change answers in a live run.

    cargo build --release --bin live-crew
    python3 benches/hot_reload.py [--python .venv/bin/python] [--rounds 10]

A live host (`--events -`, `--watch`, the default 500 ms slices) runs one stdlib
`python` crew and is fed an event every 20 ms. Each round saves a new version of the
crew's handler (written beside it and renamed in, as editors and deploys do), then, in
a second step, adds a new crew folder, and waits for the first action of the new
version, or of the new crew. Reported per kind of change:

- slices: from the slice the change was saved in (the slice of the first event sent
  after the save) to the slice of the new version's first action; the target is at most
  one slice;
- ms: from the save to that action in the output, and the same less the new runner's
  start time (spawn to ready, as `health` reports it); the target is at most one slice
  length (500 ms).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

SLICE_MS = 500
RUNTIME = 'crew: {name}\ntriggers: ["*"]\nrunner: {{kind: python, module: "handlers:react"}}\n'
HANDLER = (
    "def react(events, ctx, deps):\n"
    "    return [{{'kind': 'seen', 'payload': {{'crew': '{name}', 'v': {version},\n"
    "             'seqs': [e['payload']['seq'] for e in events]}}}}]\n"
)


def save_crew(crews: str, name: str, version: int) -> None:
    """Writes the crew folder beside the crews folder and renames it (or its handler) in."""
    folder = os.path.join(crews, name)
    staging = os.path.join(os.path.dirname(crews), f".{name}.{version}")
    os.makedirs(staging)
    with open(os.path.join(staging, "runtime.yaml"), "w") as f:
        f.write(RUNTIME.format(name=name))
    with open(os.path.join(staging, "handlers.py"), "w") as f:
        f.write(HANDLER.format(name=name, version=version))
    if os.path.isdir(folder):
        os.rename(os.path.join(staging, "handlers.py"), os.path.join(folder, "handlers.py"))
        shutil.rmtree(staging)
    else:
        os.rename(staging, folder)


class Feed:
    """Sends an event every 20 ms; `mark()` returns the seq of the next one sent."""

    def __init__(self, host: subprocess.Popen):
        self.host, self.seq, self.lock = host, 0, threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.seq += 1
                ts = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
                event = {"ts": ts, "kind": "tick", "stream_id": "s", "payload": {"seq": self.seq}}
                self.host.stdin.write(json.dumps(event) + "\n")
                self.host.stdin.flush()
            time.sleep(0.02)

    def mark(self) -> int:
        with self.lock:
            return self.seq + 1


def actions(path: str) -> list:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def start_ms(binary: str, socket: str, crew: str) -> float:
    report = json.loads(subprocess.run(
        [binary, "health", "--socket", socket], capture_output=True, text=True).stdout)
    return next(c for c in report["crews"] if c["crew"] == crew)["start_ms"]


def wait_for(output: str, crew: str, version: int, saved_seq: int, deadline: float):
    """The slice the save fell in, and the first action of `crew` at `version`."""
    while time.time() < deadline:
        found = actions(output)
        save_slice = next((a["slice"] for a in found if saved_seq in a["payload"]["seqs"]), None)
        first = next((a for a in found
                      if a["payload"]["crew"] == crew and a["payload"]["v"] == version), None)
        if first is not None and save_slice is not None:
            return save_slice, first
        time.sleep(0.005)
    raise RuntimeError(f"{crew} v{version} never answered")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/live-crew")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    scratch = tempfile.mkdtemp()
    crews = os.path.join(scratch, "crews")
    os.makedirs(crews)
    save_crew(crews, "edited", 0)
    output, socket = os.path.join(scratch, "actions.jsonl"), os.path.join(scratch, "c.sock")
    env = dict(os.environ, LIVE_CREW_LOG="warn", LIVE_CREW_PYTHON=args.python,
               LIVE_CREW_CONTROL_SOCKET=socket)
    log = open(os.path.join(scratch, "log"), "w+")
    host = subprocess.Popen(
        [args.bin, "run", "--watch", "--crews", crews, "--events", "-", "--output", output],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, env=env, text=True)
    feed = Feed(host)
    results = {"edited": [], "added": []}
    try:
        wait_for(output, "edited", 0, 1, time.time() + 30)
        for round_ in range(1, args.rounds + 1):
            for kind, crew in (("edited", "edited"), ("added", f"added{round_}")):
                # Somewhere inside a slice, not always at its start.
                time.sleep(0.7 + (round_ * 0.137) % 0.5)
                saved, seq = time.time(), feed.mark()
                save_crew(crews, crew, round_)
                save_slice, first = wait_for(output, crew, round_, seq, time.time() + 30)
                answered = time.time()
                started = start_ms(args.bin, socket, crew)
                took = (answered - saved) * 1000
                results[kind].append((first["slice"] - save_slice, took, took - started))
    except Exception:
        log.seek(0)
        sys.stderr.write(log.read())
        raise
    finally:
        feed.stop.set()
        time.sleep(0.05)
        host.stdin.close()
        host.wait(timeout=30)
        shutil.rmtree(scratch)
    print(f"{args.rounds} rounds, {SLICE_MS} ms slices, an event every 20 ms")
    print("| change | slices after the save's slice (max) | ms save → answer (p50 / max)"
          " | less the runner's start (p50 / max) |")
    print("|---|---|---|---|")
    for kind, rows in results.items():
        slices = max(r[0] for r in rows)
        took = [r[1] for r in rows]
        net = [r[2] for r in rows]
        print(f"| {kind} | {slices} | {statistics.median(took):.0f} / {max(took):.0f}"
              f" | {statistics.median(net):.0f} / {max(net):.0f} |")


if __name__ == "__main__":
    main()
