#!/usr/bin/env python3
"""Writes the benchmark workload as JSON Lines on stdout.

Default: 100,000 events round-robin over 4 streams, each stream's events 10 ms apart. Run it with
`benches/crews` (three python crews on "*", one action per event):

    python3 benches/gen_events.py > /tmp/bench.jsonl
    live-crew run --crews benches/crews --events /tmp/bench.jsonl --output /tmp/actions.jsonl
"""

import argparse
import datetime
import json
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--gap-ms", type=int, default=10)
    args = parser.parse_args()
    start = datetime.datetime(2025, 6, 1, 18, 0, tzinfo=datetime.timezone.utc)
    out = sys.stdout
    for i in range(args.events):
        # Each stream is a feed with one event every gap_ms; the feeds interleave.
        ts = start + datetime.timedelta(milliseconds=(i // args.streams) * args.gap_ms)
        event = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "kind": "tick",
            "stream_id": f"stream-{i % args.streams}",
            "payload": {"seq": i},
        }
        out.write(json.dumps(event, separators=(",", ":")))
        out.write("\n")


if __name__ == "__main__":
    main()
