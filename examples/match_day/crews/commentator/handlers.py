"""Comments on goals, using the camera summary and the score before the goal."""


def react(events, ctx, deps):
    before = ctx.get("score", {"home": 0, "away": 0})
    summaries = deps["crew:vision@-1"]
    players = summaries[-1]["payload"]["players"] if summaries else "?"
    lines = []
    for event in events:
        goal = event["payload"]
        line = (
            f"GOAL for {goal['team']} in minute {goal['minute']}! "
            f"{players} players on the pitch; it was {before['home']}-{before['away']}."
        )
        lines.append({"kind": "commentary_line", "payload": {"text": line}})
    ctx["last_line"] = lines[-1]["payload"]["text"]
    return lines
