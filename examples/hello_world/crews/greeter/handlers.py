"""Greets everyone who says hello."""


def react(events, ctx, deps):
    return [
        {"kind": "greeting", "payload": {"text": f"Hello, {event['payload']['name']}!"}}
        for event in events
    ]
