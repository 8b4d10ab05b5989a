"""Benchmark crew: one action per event."""


def react(events, ctx, deps):
    return [{"kind": "seen", "payload": event["payload"]} for event in events]
