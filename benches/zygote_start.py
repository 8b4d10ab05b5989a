#!/usr/bin/env python3
"""Cold start against fork-server start (SPEC §13), in one run, interleaved.

    cargo build --release --bin live-crew
    .venv/bin/python benches/zygote_start.py

(a) A stdlib `python` crew, spawn to ready: the crew exits in every call, so the host
    restarts it at once (backoff 1 ms) for each event; each restart's "runner ready"
    `t_ms` (plan, fork or exec, cgroup join, hello, ready) is one sample. The first
    start is left out (it waits for the zygote's own start).
(b) Ten `crewai` crews (`llm: fake`) on a live host: host start to all ready, the
    zygote ready to all ready, and the sum of PSS (`/proc/<pid>/smaps_rollup`) of every
    crew and the zygote, at ready and after CALLS calls each.

Rounds alternate cold (`LIVE_CREW_ZYGOTE=false`) and zygote, so both see the same
machine: this VM's speed swings from minute to minute.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "live-crew")
PYTHON = os.environ.get("LIVE_CREW_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
STEADY = os.path.join(ROOT, "tests", "fixtures", "crewai", "steady")
MODES = {"cold": "false", "zygote": "true"}

CRASHER = """
import os

def react(events, ctx, deps):
    os._exit(3)
"""


def event(kind: str, ms: int = 0) -> str:
    ts = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(
        milliseconds=ms
    )
    stamp = ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps({"ts": stamp, "kind": kind, "stream_id": "s", "payload": {"team": "home"}})


def env_for(mode: str, socket: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_CREW_")}
    env.update(
        LIVE_CREW_PYTHON=PYTHON,
        LIVE_CREW_ZYGOTE=MODES[mode],
        LIVE_CREW_LOG="info",
        LIVE_CREW_RESTART_BACKOFF_MS="1",
        LIVE_CREW_RESTART_BACKOFF_MAX_MS="1",
    )
    if socket:
        env["LIVE_CREW_CONTROL_SOCKET"] = socket
    return env


def log_records(text: str, message: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("msg") == message:
            records.append(record)
    return records


def stdlib_restarts(mode: str, work: str, starts: int) -> list[float]:
    crews = os.path.join(work, "crews")
    crew = os.path.join(crews, "crasher")
    os.makedirs(crew, exist_ok=True)
    with open(os.path.join(crew, "crasher.py"), "w") as file:
        file.write(CRASHER)
    with open(os.path.join(crew, "runtime.yaml"), "w") as file:
        file.write(
            "crew: crasher\ntriggers: [tick]\nmax_errors: 100000\n"
            'runner: {kind: python, module: "crasher:react"}\n'
        )
    events = os.path.join(work, "events.jsonl")
    with open(events, "w") as file:
        file.write("\n".join(event("tick", 500 * n) for n in range(starts)) + "\n")
    out = subprocess.run(
        [BIN, "run", "--log-format", "json", "--allow-invalid", "--crews", crews, "--events", events],
        env=env_for(mode),
        capture_output=True,
        text=True,
        timeout=600,
    )
    ready = log_records(out.stderr, "runner ready")
    assert all(r["start"] == mode for r in ready), {r["start"] for r in ready}
    assert len(ready) >= starts, (len(ready), out.stderr[-2000:])
    return [r["t_ms"] for r in ready[1:]]


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as file:
        for line in file:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss for {pid}")


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as file:
        return int(file.read().rsplit(")", 1)[1].split()[1])


def health(socket: str) -> dict:
    out = subprocess.run([BIN, "health", "--socket", socket], capture_output=True, text=True)
    return json.loads(out.stdout) if out.stdout.strip() else {}


def parse_ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def crewai_crews(mode: str, work: str, crews_n: int, calls: int) -> dict:
    crews = os.path.join(work, "crews")
    for n in range(crews_n):
        crew = os.path.join(crews, f"keeper_{n}")
        os.makedirs(crew, exist_ok=True)
        for name in ("agents.yaml", "tasks.yaml"):
            shutil.copy(os.path.join(STEADY, name), crew)
        with open(os.path.join(STEADY, "runtime.yaml")) as file:
            runtime = file.read().replace("crew: steady", f"crew: keeper_{n}")
        with open(os.path.join(crew, "runtime.yaml"), "w") as file:
            file.write(runtime)
    socket = os.path.join(work, "control.sock")
    started = time.time()
    host = subprocess.Popen(
        [BIN, "run", "--log-format", "json", "--events", "-", "--crews", crews,
         "--output", os.path.join(work, "actions.jsonl")],
        env=env_for(mode, socket),
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    log: list[str] = []
    threading.Thread(target=lambda: log.extend(host.stderr), daemon=True).start()
    try:
        while True:
            report = health(socket)
            crews_up = report.get("crews", [])
            if len(crews_up) == crews_n and all(c["state"] == "ready" for c in crews_up):
                break
            if time.time() - started > 300:
                raise RuntimeError("crews never ready:\n" + "".join(log[-30:]))
            time.sleep(0.02)
        ready = log_records("".join(log), "runner ready")
        all_ready = max(parse_ts(r["ts"]) for r in ready)
        pids = [c["pid"] for c in crews_up]
        processes = set(pids)
        if mode == "zygote":
            processes.add(parent_of(pids[0]))
        at_ready = sum(pss_kb(pid) for pid in processes)
        zygote = log_records("".join(log), "fork server ready")
        for n in range(calls):
            # Wall-clock stamps: a live host closes slices on its own clock.
            now = datetime.datetime.now(datetime.timezone.utc)
            stamp = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
            host.stdin.write(json.dumps({"ts": stamp, "kind": "goal", "stream_id": f"s{n}", "payload": {"team": "home"}}) + "\n")
            host.stdin.flush()
        actions = os.path.join(work, "actions.jsonl")
        deadline = time.time() + 900
        while True:
            with open(actions) as file:
                answered = sum(1 for _ in file)
            if answered >= calls * crews_n:
                break
            if time.time() > deadline:
                raise RuntimeError(f"only {answered} actions:\n" + "".join(log[-30:]))
            time.sleep(0.2)
        after_calls = sum(pss_kb(pid) for pid in processes)
        return {
            "host_to_ready_s": all_ready - started,
            "zygote_to_ready_s": all_ready - parse_ts(zygote[0]["ts"]) if zygote else None,
            "pss_ready_mb": at_ready / 1024,
            "pss_calls_mb": after_calls / 1024,
        }
    finally:
        host.stdin.close()
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--starts", type=int, default=40)
    parser.add_argument("--crews", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release --bin live-crew ({BIN} is missing)")
    starts = {mode: [] for mode in MODES}
    crewai = {mode: [] for mode in MODES}
    for round_n in range(args.rounds):
        for mode in MODES:
            with tempfile.TemporaryDirectory() as work:
                starts[mode].extend(stdlib_restarts(mode, work, args.starts))
            with tempfile.TemporaryDirectory() as work:
                result = crewai_crews(mode, work, args.crews, args.calls)
            crewai[mode].append(result)
            print(f"round {round_n + 1} {mode}: {json.dumps(result)}", file=sys.stderr)
    print(f"(a) stdlib python crew, spawn to ready, {args.rounds}x{args.starts - 1} starts:")
    for mode, samples in starts.items():
        samples.sort()
        p90 = samples[int(len(samples) * 0.9)]
        print(f"  {mode:7} p50 {statistics.median(samples):6.1f} ms   p90 {p90:6.1f} ms")
    print(f"(b) {args.crews} crewai crews (best of {args.rounds} rounds; PSS of crews + zygote):")
    for mode, results in crewai.items():
        best = lambda key: min(r[key] for r in results if r[key] is not None) if any(r[key] is not None for r in results) else None  # noqa: E731
        zygote = best("zygote_to_ready_s")
        zygote_text = f"{zygote:5.2f} s" if zygote is not None else "    -  "
        print(
            f"  {mode:7} host start -> all ready {best('host_to_ready_s'):5.2f} s   "
            f"zygote ready -> all ready {zygote_text}   "
            f"PSS at ready {best('pss_ready_mb'):6.0f} MB   after {args.calls} calls each {best('pss_calls_mb'):6.0f} MB"
        )


if __name__ == "__main__":
    main()
