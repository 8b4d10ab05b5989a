"""Summarises the camera frames of a slice."""


def react(events, ctx, deps):
    players = max(event["payload"]["players"] for event in events)
    return [{"kind": "frame_summary", "payload": {"frames": len(events), "players": players}}]
