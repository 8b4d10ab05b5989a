"""The seed prototype's Python API (SPEC §17) end to end: ``@event_handler`` functions run
as ``python`` crews in the real live-crew binary ($LIVE_CREW_BIN), one event per call."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import FIXTURES, RUNNERS_PYTHON
from live_crew import Action, Event, LiveCrewError, Orchestrator, event_handler
from live_crew.handler_crew import MODULE

needs_binary = pytest.mark.skipif(
    not os.environ.get("LIVE_CREW_BIN"), reason="set LIVE_CREW_BIN (scripts/test.sh does)"
)

# The earlier API's hello world, unchanged.
HELLO_WORLD = """\
from live_crew import Orchestrator, event_handler, Action

@event_handler("user_signup")
def greet_user(event):
    return Action.create("greeting", f"Welcome {event.payload['name']}!")

async def main():
    orchestrator = Orchestrator.from_file("events.json")
    orchestrator.register_handler(greet_user, ["user_signup"])
    result = await orchestrator.run()
    print(result.events_processed, result.actions_generated, result.time_slices)
"""
# Three events, laid out as the earlier API's example file was.
EVENTS_JSON = """\
[
  {
    "ts": "2025-08-04T09:00:00Z",
    "kind": "user_signup",
    "stream_id": "users",
    "payload": {"name": "Alice Johnson", "email": "alice@example.com"}
  },
  {
    "ts": "2025-08-04T09:00:30Z",
    "kind": "user_login",
    "stream_id": "users",
    "payload": {"user_id": "alice_123"}
  },
  {
    "ts": "2025-08-04T09:01:00Z",
    "kind": "user_signup",
    "stream_id": "users",
    "payload": {"name": "Bob Smith", "email": "bob@example.com"}
  }
]
"""
EVENTS = json.loads(EVENTS_JSON)


@pytest.fixture
def handlers(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(FIXTURES / "prototype_api"))
    import prototype_handlers

    return prototype_handlers


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.json"
    path.write_text(EVENTS_JSON)
    return path


def run_script(folder: Path, text: str) -> subprocess.CompletedProcess[str]:
    (folder / "events.json").write_text(EVENTS_JSON)
    (folder / "hello.py").write_text(text)
    return subprocess.run(
        [sys.executable, "hello.py"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(RUNNERS_PYTHON)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@needs_binary
def test_the_hello_world_script_runs_unchanged(tmp_path: Path):
    script = f'import asyncio\n{HELLO_WORLD}\nif __name__ == "__main__":\n    asyncio.run(main())\n'
    done = run_script(tmp_path, script)
    assert (done.returncode, done.stdout) == (0, "3 2 3\n"), done.stderr


@needs_binary
def test_a_script_without_the_main_guard_is_told_to_add_it(tmp_path: Path):
    done = run_script(tmp_path, f"import asyncio\n{HELLO_WORLD}\nasyncio.run(main())\n")
    assert done.returncode == 1 and done.stdout == ""
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("live_crew.orchestrator.LiveCrewError: crew 'greet_user': ")
    assert "module 'hello' starts an Orchestrator when imported" in last
    assert last.endswith('put the code that runs it under `if __name__ == "__main__":`')


@needs_binary
def test_the_hello_world_runs_in_process_from_json_lines(handlers, tmp_path: Path):
    events_file = tmp_path / "events.jsonl"
    lines = ["# three events", *map(json.dumps, EVENTS), ""]
    events_file.write_text("\n".join(lines))

    async def main():
        orchestrator = Orchestrator.from_file(events_file)
        orchestrator.register_handler(handlers.greet_user, ["user_signup"])
        return await orchestrator.run()

    result = asyncio.run(main())
    assert (result.events_processed, result.actions_generated, result.time_slices) == (3, 2, 3)
    assert result.ok and result.errors == []
    first = result.actions[0]
    assert (first.kind, first.payload, first.crew, first.stream_id, first.slice) == (
        "greeting",
        "Welcome Alice Johnson!",
        "greet_user",
        "users",
        0,
    )
    assert first.ts == datetime(2025, 8, 4, 9, 0, 0, 500_000, tzinfo=timezone.utc)  # slice end
    assert result.actions[1].payload == "Welcome Bob Smith!"


@needs_binary
def test_handlers_of_some_kinds_or_all_return_one_action_a_list_or_none(handlers, events_file):
    orchestrator = Orchestrator.from_file(events_file)
    for handler in (
        handlers.greet_user,
        handlers.track_activity,
        handlers.audit_log,
        handlers.ignore_all,
    ):
        orchestrator.register_handler(handler)  # with the kinds of its @event_handler
    result = asyncio.run(orchestrator.run())
    assert result.ok, result.log
    # Host order: by slice, then crew (handler) name, then the order a handler returned.
    assert [(a.slice, a.crew, a.kind) for a in result.actions] == [
        (0, "audit_log", "audit"),
        (0, "audit_log", "audit_short"),
        (0, "greet_user", "greeting"),
        (0, "track_activity", "activity"),
        (60, "audit_log", "audit"),
        (60, "audit_log", "audit_short"),
        (60, "track_activity", "activity"),
        (120, "audit_log", "audit"),
        (120, "audit_log", "audit_short"),
        (120, "greet_user", "greeting"),
        (120, "track_activity", "activity"),
    ]
    assert (result.actions_generated, result.time_slices) == (11, 3)
    assert [a.ttl_ms for a in result.actions[:2]] == [5000, 1000]
    assert result.actions[3].payload == {
        "kind": "user_signup",
        "stream_id": "users",
        "ts": "2025-08-04T09:00:00+00:00",
        "ts_type": "datetime",
        "payload": {"name": "Alice Johnson", "email": "alice@example.com"},
    }


@needs_binary
def test_each_event_of_a_slice_is_one_call_of_the_handler_in_order(handlers, tmp_path: Path):
    def at(ms: int, kind: str, n: int) -> dict:
        ts = f"2025-08-04T09:00:00.{ms:03d}Z"
        return {"ts": ts, "kind": kind, "stream_id": "s", "payload": {"n": n}}

    config = tmp_path / "live-config.yaml"
    config.write_text("slice_ms: 1000\n")
    orchestrator = Orchestrator.from_config(config)
    orchestrator.register_handler(handlers.count)  # not decorated, no kinds: every event
    orchestrator.register_handler(handlers.track_activity, "b")  # overrides its own kinds
    second_slice = Event(datetime(2025, 8, 4, 9, 0, 1, 500_000), "a", "s", {"n": 4})  # naive: UTC
    events = [at(100, "a", 1), at(200, "b", 2), at(300, "a", 3), second_slice]
    result = asyncio.run(orchestrator.run(events))
    assert result.ok, result.log
    assert [
        (a.slice, a.crew, a.payload if a.crew == "count" else a.payload["kind"])
        for a in result.actions
    ] == [
        (0, "count", 1),
        (0, "count", 2),
        (0, "count", 3),
        (0, "track_activity", "b"),
        (1, "count", 4),
    ]
    assert (result.events_processed, result.time_slices) == (4, 2)


@needs_binary
def test_a_failing_handler_is_reported_with_its_name(handlers, events_file, caplog):
    orchestrator = Orchestrator.from_file(events_file)
    orchestrator.register_handler(handlers.welcome_everyone)  # no 'name' in user_login
    orchestrator.register_handler(handlers.returns_text)
    with caplog.at_level(logging.WARNING, logger="live_crew"):
        result = asyncio.run(orchestrator.run())
    assert not result.ok and result.returncode == 1
    # The run goes on: the other events' actions are there.
    assert [(a.slice, a.payload) for a in result.actions] == [
        (0, "Welcome Alice Johnson!"),
        (120, "Welcome Bob Smith!"),
    ]
    errors = sorted((e["crew"], e["slice"], e["reason"], e["message"]) for e in result.errors)
    prefix = "react() in module '_live_crew_handler' raised HandlerError: "
    assert errors == [
        (
            "returns_text",
            0,
            "runner_error",
            f"crew 'returns_text': {prefix}returns_text() returned str: return an Action "
            "(Action.create(kind, payload)), a list of Actions, or None",
        ),
        (
            "returns_text",
            120,
            "runner_error",
            f"crew 'returns_text': {prefix}returns_text() returned str: return an Action "
            "(Action.create(kind, payload)), a list of Actions, or None",
        ),
        (
            "welcome_everyone",
            60,
            "runner_error",
            f"crew 'welcome_everyone': {prefix}welcome_everyone() raised KeyError: 'name' "
            "on event 'user_login' at 2025-08-04T09:00:30.000000Z",
        ),
    ]
    assert sorted(r.getMessage() for r in caplog.records) == [e[3] for e in errors]


def test_event_handler_marks_the_function_with_its_kinds(handlers):
    kinds = "__live_crew_kinds__"
    assert getattr(handlers.greet_user, kinds) == ["user_signup"]
    assert getattr(handlers.track_activity, kinds) == ["user_signup", "user_login"]
    assert getattr(handlers.audit_log, kinds) is None  # bare @event_handler
    assert getattr(handlers.ignore_all, kinds) is None  # @event_handler()
    event = Event(datetime(2025, 1, 1, tzinfo=timezone.utc), "user_signup", "s", {"name": "Ada"})
    assert handlers.greet_user(event) == Action.create("greeting", "Welcome Ada!")


def test_crews_folder_holds_one_python_crew_per_handler(handlers, tmp_path: Path):
    orchestrator = Orchestrator()
    orchestrator.register_handler(handlers.greet_user)
    orchestrator.register_handler(handlers.count, ["a", "b"])
    orchestrator.register_handler(handlers.welcome_everyone)
    crews = orchestrator.write_crews(tmp_path)
    assert sorted(p.name for p in crews.iterdir()) == ["count", "greet_user", "welcome_everyone"]
    document = json.loads((crews / "count" / "count.runtime.yaml").read_text())
    assert document["triggers"] == ["a", "b"]
    assert document["runner"]["kind"] == "python"
    assert document["runner"]["module"] == f"{MODULE}:react"
    assert document["runner"]["pythonpath"] == [
        str(RUNNERS_PYTHON),
        str(FIXTURES / "prototype_api"),
    ]
    assert json.loads((crews / "greet_user" / "greet_user.runtime.yaml").read_text())[
        "triggers"
    ] == ["user_signup"]
    assert json.loads((crews / "welcome_everyone" / "welcome_everyone.runtime.yaml").read_text())[
        "triggers"
    ] == ["*"]
    source = (crews / "count" / f"{MODULE}.py").read_text()
    assert "react = react_for('prototype_handlers', 'count')" in source


class Greeter:
    @staticmethod
    def greet(event):
        return None


def test_usage_errors_are_exceptions(handlers):
    orchestrator = Orchestrator()
    orchestrator.register_handler(handlers.greet_user)
    with pytest.raises(LiveCrewError, match="registered already"):
        orchestrator.register_handler(handlers.greet_user)
    with pytest.raises(LiveCrewError, match="cannot name its crew"):
        orchestrator.register_handler(Greeter.greet)

    @event_handler("x")
    def local(event):
        return None

    for nested in (local, lambda event: None):
        with pytest.raises(LiveCrewError, match="inside a function"):
            orchestrator.register_handler(nested)
    with pytest.raises(LiveCrewError, match="no events"):
        asyncio.run(orchestrator.run())
    with pytest.raises(LiveCrewError, match="no handlers"):
        asyncio.run(Orchestrator().run(EVENTS))


def test_actions_are_checked_where_they_are_made():
    assert Action.create("greeting", "hi").to_dict() == {
        "kind": "greeting",
        "payload": "hi",
        "ttl_ms": 5000,
    }
    for kind in ("", "two words", "x" * 51, "__system"):
        with pytest.raises(ValueError, match="action kind"):
            Action.create(kind, None)
    with pytest.raises(ValueError, match="ttl_ms"):
        Action.create("greeting", None, ttl_ms=0)


def test_events_read_the_hosts_timestamps_as_utc_datetimes():
    record = {"ts": "2025-08-04T09:00:30.250000Z", "kind": "k", "stream_id": "s", "payload": 1}
    event = Event.from_dict(record)
    assert event.ts == datetime(2025, 8, 4, 9, 0, 30, 250_000, tzinfo=timezone.utc)
    assert Event.from_dict(event.to_dict()) == event
