#!/usr/bin/env python3
"""An LLM call through the host's gateway (SPEC §14) against the same call made directly.

    cargo build --release --bin live-crew
    .venv/bin/python benches/llm_gateway.py

Both ask the tests' OpenAI-compatible server on loopback
(`tests/fixtures/llm/openai_server.py`) for the same completion. Direct: this process
POSTs to it with `http.client`, the way a crew with network and a key would. Through the
gateway: a `python` crew in a live host sends `llm_request`s over the runner protocol
(`live_crew_runner._channel.llm`, what `GatewayLLM` calls) and times each round trip; the
host makes the HTTP request. Rounds alternate the two, REQUESTS requests a round, so both
see the same machine. The difference is what the gateway adds.
"""

import argparse
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "live-crew")
PYTHON = os.environ.get("LIVE_CREW_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
SERVER = os.path.join(ROOT, "tests", "fixtures", "llm", "openai_server.py")
BODY = {"messages": [{"role": "user", "content": "Describe the goal in one line."}]}

TIMER = """
import time
import live_crew_runner

def react(events, ctx, deps):
    n = events[0]["payload"]["requests"]
    body = {body}
    times = []
    for _ in range(n):
        started = time.perf_counter()
        answer = live_crew_runner._channel.llm(live_crew_runner.call_id(), "bench/model", body)
        times.append(time.perf_counter() - started)
        assert answer["type"] == "llm_response", answer
    return [{{"kind": "times", "payload": times}}]
"""


def start_server(work: str) -> tuple[subprocess.Popen, int]:
    port_file = os.path.join(work, "port")
    server = subprocess.Popen([PYTHON, SERVER, port_file, os.path.join(work, "requests.jsonl")])
    while not os.path.exists(port_file):
        time.sleep(0.01)
    with open(port_file) as file:
        return server, int(file.read())


def direct(port: int, requests: int) -> list[float]:
    payload = json.dumps({**BODY, "model": "model"})
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request(
            "POST",
            "/v1/chat/completions",
            payload,
            {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
        )
        json.loads(connection.getresponse().read())
        connection.close()
        times.append(time.perf_counter() - started)
    return times


class Host:
    """A live host with the timer crew, on stdin."""

    def __init__(self, work: str, port: int):
        crew = os.path.join(work, "crews", "timer")
        os.makedirs(crew)
        with open(os.path.join(crew, "timer.py"), "w") as file:
            file.write(TIMER.format(body=repr(BODY)))
        with open(os.path.join(crew, "runtime.yaml"), "w") as file:
            file.write(
                "crew: timer\ntriggers: [tick]\ntimeout_ms: 60000\n"
                'runner: {kind: python, module: "timer:react"}\n'
            )
        config = os.path.join(work, "live-config.yaml")
        with open(config, "w") as file:
            file.write(
                f"llm:\n  providers:\n    bench: {{base_url: 'http://127.0.0.1:{port}/v1', "
                "api_key_env: BENCH_KEY}\n"
            )
        self.actions = os.path.join(work, "actions.jsonl")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_CREW_")}
        env.update(LIVE_CREW_PYTHON=PYTHON, LIVE_CREW_LOG="warn", BENCH_KEY="sk-bench")
        self.process = subprocess.Popen(
            [BIN, "run", "--config", config, "--events", "-", "--crews",
             os.path.join(work, "crews"), "--output", self.actions],
            env=env,
            stdin=subprocess.PIPE,
            text=True,
        )
        self.sent = 0

    def gateway(self, requests: int) -> list[float]:
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
        line = {"ts": stamp.replace("+00:00", "Z"), "kind": "tick", "stream_id": f"s{self.sent}",
                "payload": {"requests": requests}}
        self.process.stdin.write(json.dumps(line) + "\n")
        self.process.stdin.flush()
        self.sent += 1
        deadline = time.time() + 120
        while True:
            if os.path.exists(self.actions):
                with open(self.actions) as file:
                    answers = [json.loads(l) for l in file]
                if len(answers) >= self.sent:
                    return answers[-1]["payload"]
            if time.time() > deadline:
                raise RuntimeError("the timer crew never answered")
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


def governor(work: str, port: int, ticks: int) -> tuple[int, int]:
    """The most requests in flight at the server, and how many it saw, for ten prompt
    crews under a concurrency limit of 4."""
    crews = os.path.join(work, "governed")
    for n in range(10):
        crew = os.path.join(crews, f"caller_{n}")
        os.makedirs(crew)
        with open(os.path.join(crew, "runtime.yaml"), "w") as file:
            file.write(
                f"crew: caller_{n}\ntriggers: [tick]\nrunner:\n  kind: prompt\n  llm: bench/slow-50\n"
                "  user_template: 'Slice {{ slice }}.'\n"
                "  outputs: [{kind: said, payload: {text: '{{ generated }}'}}]\n"
            )
    config = os.path.join(work, "governed.yaml")
    with open(config, "w") as file:
        file.write(
            f"llm:\n  providers:\n    bench: {{base_url: 'http://127.0.0.1:{port}/v1'}}\n"
            "  limits:\n    bench: {concurrency: 4}\n"
        )
    events = os.path.join(work, "governed.jsonl")
    with open(events, "w") as file:
        for n in range(ticks):
            stamp = f"2025-01-01T00:00:{n // 2:02}.{(n % 2) * 500:03}Z"
            file.write(json.dumps({"ts": stamp, "kind": "tick", "stream_id": "g", "payload": {}}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVE_CREW_")}
    env.update(LIVE_CREW_PYTHON=PYTHON, LIVE_CREW_LOG="warn")
    subprocess.run(
        [BIN, "run", "--config", config, "--crews", crews, "--events", events],
        env=env, stdout=subprocess.DEVNULL, check=True, timeout=600,
    )
    with open(os.path.join(work, "requests.jsonl")) as file:
        seen = [json.loads(line) for line in file]
    slow = [r["in_flight"] for r in seen if r["body"]["model"] == "slow-50"]
    return max(slow), len(slow)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--ticks", type=int, default=20)
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"build first: cargo build --release --bin live-crew ({BIN} is missing)")
    with tempfile.TemporaryDirectory() as work:
        server, port = start_server(work)
        host = Host(work, port)
        try:
            host.gateway(10)  # the runner started, the host's connection pool warm
            results = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                results["direct"] += direct(port, args.requests)
                results["gateway"] += host.gateway(args.requests)
            most, seen = governor(work, port, args.ticks)
        finally:
            host.stop()
            server.kill()
    print(f"{args.rounds} rounds x {args.requests} requests, interleaved:")
    for name, times in results.items():
        ms = [t * 1000 for t in times]
        print(f"  {name:8} p50 {statistics.median(ms):6.2f} ms   p99 {percentile(ms, 0.99):6.2f} ms")
    p50 = statistics.median(results["gateway"]) - statistics.median(results["direct"])
    p99 = percentile(results["gateway"], 0.99) - percentile(results["direct"], 0.99)
    print(f"  the gateway adds {p50 * 1000:+.2f} ms at p50, {p99 * 1000:+.2f} ms at p99")
    print(f"governor: 10 crews, concurrency 4: at most {most} in flight at the server ({seen} requests)")


if __name__ == "__main__":
    main()
