"""Keeps the score in the shared context."""


def react(events, ctx, deps):
    score = dict(ctx.get("score", {"home": 0, "away": 0}))
    for event in events:
        score[event["payload"]["team"]] += 1
    ctx["score"] = score
    return [{"kind": "score_update", "payload": score}]
