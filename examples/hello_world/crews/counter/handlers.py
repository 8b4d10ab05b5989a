"""Counts the events of each stream in the shared context."""


def react(events, ctx, deps):
    seen = ctx.get("seen", 0) + len(events)
    ctx["seen"] = seen
    return [{"kind": "count", "payload": {"seen": seen}}]
