"""Repeats the greeter's greetings, louder."""


def react(events, ctx, deps):
    return [
        {"kind": "shout", "payload": {"text": greeting["payload"]["text"].upper()}}
        for greeting in deps["crew:greeter@0"]
    ]
