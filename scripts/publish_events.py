#!/usr/bin/env python3
"""Publishes events to live-crew's distributed mode: each JSON Lines event (from a file,
or stdin) to `live.<stream_id>.events` on NATS JetStream, waiting for each ack.

    .venv/bin/python scripts/publish_events.py --nats nats://127.0.0.1:4222 events.jsonl

`--now` restamps the events to the current time, keeping their spacing, so a recording
plays as live input (slices then close on the wall clock as the events arrive);
`--pace` also waits between events as long as their timestamps lie apart.
Needs the `nats-py` package (in the project venv).
"""

import argparse
import asyncio
import datetime
import json
import sys

import nats
import nats.js.errors


def parse_ts(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def publish(args: argparse.Namespace) -> int:
    source = open(args.events) if args.events != "-" else sys.stdin
    lines = [line for line in source if line.strip() and not line.lstrip().startswith("#")]
    client = await nats.connect(args.nats)
    jetstream = client.jetstream()
    # The host creates LIVE_EVENTS when it starts; a publisher started first waits.
    for attempt in range(600):
        try:
            await jetstream.stream_info("LIVE_EVENTS")
            break
        except nats.js.errors.NotFoundError:
            if attempt == 0:
                print("waiting for live-crew to create the LIVE_EVENTS stream", file=sys.stderr)
            await asyncio.sleep(0.1)
    else:
        print("no LIVE_EVENTS stream after 60 s: is `live-crew run --nats` running?", file=sys.stderr)
        return 1
    first = None
    started = datetime.datetime.now(datetime.timezone.utc)
    for line in lines:
        event = json.loads(line)
        if args.now or args.pace:
            ts = parse_ts(event["ts"])
            first = first or ts
            due = started + (ts - first)
            if args.pace:
                wait = (due - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
                if wait > 0:
                    await asyncio.sleep(wait)
            event["ts"] = due.isoformat().replace("+00:00", "Z")
        await jetstream.publish(f"live.{event['stream_id']}.events", json.dumps(event).encode())
    await client.close()
    print(f"published {len(lines)} events", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", help="a JSON Lines file of events, or - for stdin")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--now", action="store_true", help="restamp the events to now")
    parser.add_argument("--pace", action="store_true", help="restamp and play at their pace")
    return asyncio.run(publish(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
