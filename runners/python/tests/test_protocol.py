"""The runner process against protocol v1: handshake, calls, heartbeats, stdout, exit."""

from __future__ import annotations

import json
import time

from conftest import FIXTURES, call_message, event, python_config


def test_handshake_replies_ready_in_compact_json(spawn):
    runner = spawn(FIXTURES / "echo")
    runner.hello(python_config("echo", "handlers"))
    assert (
        runner.stdout_lines[0]
        == b'{"type":"ready","protocol":1,"runner":"live-crew-python/0.1.0","features":["llm"]}\n'
    )


def test_call_gets_result_with_matching_id(python_crew):
    runner = python_crew("echo", "handlers")
    reply = runner.call(7, [event("goal", {"team": "home"}), event("goal", "ünïcode")])
    assert reply == {
        "type": "result",
        "id": 7,
        "actions": [
            {"kind": "echo", "payload": {"team": "home"}},
            {"kind": "echo", "payload": "ünïcode"},
        ],
    }
    assert "ünïcode".encode() in runner.stdout_lines[-1], "UTF-8 on the wire, not \\u escapes"


def test_calls_are_served_one_after_another(python_crew):
    runner = python_crew("echo", "handlers")
    for call_id in range(1, 51):
        assert runner.call(call_id, [event("tick", call_id)])["actions"] == [
            {"kind": "echo", "payload": call_id}
        ]


def test_heartbeats_while_idle(python_crew):
    runner = python_crew("echo", "handlers", heartbeat_ms=50)
    time.sleep(0.3)
    assert runner.stdout_lines.count(b'{"type":"heartbeat"}\n') >= 3


def test_heartbeats_continue_while_react_sleeps(python_crew):
    _assert_heartbeats_during("sleeps", python_crew)


def test_heartbeats_continue_while_react_holds_the_gil(python_crew):
    _assert_heartbeats_during("spins", python_crew)


def _assert_heartbeats_during(function, python_crew):
    heartbeat_ms = 100
    runner = python_crew("slow", f"handlers:{function}", heartbeat_ms=heartbeat_ms)
    runner.send(call_message(1, [event("work", {"seconds": 4 * heartbeat_ms / 1000})], {}, {}))
    beats_during_call = 0
    while (message := runner.recv(heartbeats=True))["type"] == "heartbeat":
        beats_during_call += 1
    assert message == {"type": "result", "id": 1, "actions": [{"kind": "done", "payload": None}]}
    # 4 intervals elapse; the host would give up after 3 silent ones.
    assert beats_during_call >= 3


def test_stray_output_goes_to_stderr_not_the_protocol_stream(python_crew):
    runner = python_crew("hostile", "handlers:noisy")
    assert runner.call(1)["type"] == "result"
    assert runner.call(2)["type"] == "result"
    runner.send({"type": "shutdown"})
    assert runner.wait() == 0
    for line in runner.stdout_lines:
        assert json.loads(line)["type"] in {"ready", "result", "heartbeat"}, line
    for stray in (
        "stray print",
        "stray sys.stdout write",
        "stray fd 1 write",
        "stray child output",
    ):
        assert runner.stderr.count(stray) == 2, (stray, runner.stderr)


def test_crew_reading_stdin_cannot_steal_host_messages(python_crew):
    runner = python_crew("hostile", "handlers:reads_stdin")
    reply = runner.call(1)
    assert reply["actions"] == [{"kind": "stdin", "payload": {"python": "", "child": ""}}]
    assert runner.call(2)["id"] == 2


def test_shutdown_exits_zero(python_crew):
    runner = python_crew("echo", "handlers")
    runner.send({"type": "shutdown"})
    assert runner.wait() == 0


def test_shutdown_does_not_wait_for_crew_threads(python_crew):
    runner = python_crew("hostile", "handlers:starts_thread")
    assert runner.call(1)["type"] == "result"
    runner.send({"type": "shutdown"})
    assert runner.wait(timeout=5) == 0


def test_end_of_input_exits_zero(python_crew):
    runner = python_crew("echo", "handlers")
    runner.close_stdin()
    assert runner.wait() == 0


def test_end_of_input_before_hello_exits_zero(spawn):
    runner = spawn(FIXTURES / "echo")
    runner.close_stdin()
    assert runner.wait() == 0
    assert runner.stdout_lines == []


def test_malformed_line_exits_nonzero_with_message(python_crew):
    runner = python_crew("echo", "handlers")
    runner.send_raw(b'{"type":"call","id":1,\n')
    assert runner.wait() == 2
    assert "not JSON" in runner.stderr


def test_call_before_hello_exits_nonzero(spawn):
    runner = spawn(FIXTURES / "echo")
    runner.send(call_message(1, [], {}, {}))
    assert runner.wait() == 2
    assert "expected 'hello'" in runner.stderr


def test_other_protocol_version_exits_nonzero(spawn):
    runner = spawn(FIXTURES / "echo")
    runner.send(
        {
            "type": "hello",
            "protocol": 2,
            "crew": "echo",
            "crew_dir": str(FIXTURES / "echo"),
            "config": python_config("echo", "handlers"),
            "heartbeat_ms": 1000,
        }
    )
    assert runner.wait() == 2
    assert "protocol 2" in runner.stderr


def test_call_missing_fields_exits_nonzero(python_crew):
    runner = python_crew("echo", "handlers")
    runner.send({"type": "call", "id": "1", "events": [], "context": {}, "deps": {}})
    assert runner.wait() == 2
    assert "integer 'id'" in runner.stderr


def test_unknown_message_type_exits_nonzero(python_crew):
    runner = python_crew("echo", "handlers")
    runner.send({"type": "reload"})
    assert runner.wait() == 2
    assert "'reload'" in runner.stderr
