#!/usr/bin/env python3
"""Batch throughput: runs `live-crew run` on the issue workload several times, interleaving
the binaries (`--bin`, repeatable) and configurations (`--config`) given, and prints each
one's best and median wall time.

    cargo build --release
    python3 benches/throughput.py --python /usr/bin/python3

The workload is `gen_events.py`'s default (100,000 events over 4 streams) through
`benches/crews` (three `python` crews, one action per event). Each run's wall time covers
the whole process, startup included; CPU time is the host's plus its runners'. On a shared
VM single runs swing by half, so compare best and median over several runs.

`--host-only` runs the same three crews as `command` crews on a compiled runner that does
next to nothing (`cargo build --release --example echo_runner`), which leaves the host's
own cost: the most the host can do on this workload whatever the crews cost.
"""

import argparse
import os
import shutil
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_once(binary: str, crews: str, events: str, config: str | None, env: dict) -> dict:
    output = tempfile.NamedTemporaryFile(prefix="live-crew-actions-", delete=False)
    output.close()
    command = [binary, "run", "--crews", crews, "--events", events, "--output", output.name, "-q"]
    if config:
        command += ["--config", config]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(output.name, "rb") as written:
        actions = sum(1 for _ in written)
    os.unlink(output.name)
    return {
        "wall": wall,
        "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        # The largest process of the run is the host (runners take ~10 MB each).
        "rss_mb": after.ru_maxrss / 1024,
        "actions": actions,
    }


def echo_crews(root: str, echo_runner: str, names=("alpha", "beta", "gamma")) -> str:
    """`benches/crews` (or the crews of `names`) as command crews on the compiled echo
    runner, in `root/crews`."""
    crews = os.path.join(root, "crews")
    for name in names:
        folder = os.path.join(crews, name)
        os.makedirs(folder)
        shutil.copy(echo_runner, os.path.join(folder, "echo_runner"))
        with open(os.path.join(folder, "runtime.yaml"), "w") as runtime:
            runtime.write(
                f"crew: {name}\ntriggers: ['*']\n"
                "runner: {kind: command, command: [./echo_runner]}\n"
                "context: {read: [], write: []}\n"
            )
    return crews


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bin", action="append", default=[],
        help="a live-crew binary to run (repeatable, to compare builds run for run); "
        "the default is target/release/live-crew",
    )
    parser.add_argument("--python", help="interpreter for the crews (LIVE_CREW_PYTHON)")
    parser.add_argument("--crews", default=os.path.join(HERE, "crews"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--host-only", action="store_true",
        help="crews on the compiled echo runner instead of Python (see above)",
    )
    parser.add_argument(
        "--config", action="append", default=[],
        help="a live-config.yaml to compare (repeatable); the default is no config",
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.python:
        env["LIVE_CREW_PYTHON"] = args.python
    configs = args.config or [None]
    binaries = args.bin or [os.path.join(HERE, "..", "target", "release", "live-crew")]
    variants = [(binary, config) for binary in binaries for config in configs]
    scratch = tempfile.mkdtemp(prefix="live-crew-bench-")
    events = os.path.join(scratch, "events.jsonl")
    try:
        crews = args.crews
        if args.host_only:
            echo_runner = os.path.join(os.path.dirname(binaries[0]), "examples", "echo_runner")
            crews = echo_crews(scratch, echo_runner)
        with open(events, "w") as out:
            subprocess.run(
                [sys.executable, os.path.join(HERE, "gen_events.py"), "--events", str(args.events)],
                stdout=out, check=True,
            )
        results: dict = {variant: [] for variant in variants}
        for _ in range(args.runs):
            for binary, config in variants:
                results[(binary, config)].append(run_once(binary, crews, events, config, env))
    finally:
        shutil.rmtree(scratch)
    for (binary, config), runs in results.items():
        walls = sorted(run["wall"] for run in runs)
        best, median = walls[0], statistics.median(walls)
        print(
            f"{binary} {config or 'defaults'}: {args.events / best:,.0f} events/s best "
            f"({best:.2f} s), {args.events / median:,.0f} median ({median:.2f} s); "
            f"CPU {statistics.median(run['cpu'] for run in runs):.2f} s median; "
            f"peak RSS {max(run['rss_mb'] for run in runs):.0f} MB; "
            f"{runs[0]['actions']:,} actions"
        )


if __name__ == "__main__":
    main()
