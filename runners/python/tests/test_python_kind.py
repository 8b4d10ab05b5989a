"""The `python` runner kind end to end: ctx patches, crew failures, loading, unknown kinds."""

from __future__ import annotations

import pytest

from conftest import FIXTURES, event, python_config

SNAPSHOT = {"score": {"home": 1, "away": 2}, "last_goal": "home", "stale": 1, "period": 1}


def test_nested_ctx_writes_become_a_merge_patch(python_crew):
    runner = python_crew("scorer", "handlers")
    reply = runner.call(1, [event("goal", {"team": "home"})], context=SNAPSHOT)
    assert reply == {
        "type": "result",
        "id": 1,
        "actions": [{"kind": "score", "payload": {"home": 2, "away": 2}, "ttl_ms": 1000}],
        "context_patch": {"score": {"home": 2}, "stats": {"goals": 1}},
    }


def test_each_call_starts_from_its_own_snapshot(python_crew):
    runner = python_crew("scorer", "handlers")
    runner.call(1, [event("goal", {"team": "home"})], context=SNAPSHOT)
    reply = runner.call(2, [event("goal", {"team": "away"})], context=SNAPSHOT)
    assert reply["context_patch"] == {"score": {"away": 3}, "stats": {"goals": 1}}


def test_deletions_become_nulls(python_crew):
    runner = python_crew("scorer", "handlers:forget")
    reply = runner.call(1, context=SNAPSHOT)
    assert reply["context_patch"] == {"last_goal": None, "stale": None, "score": {"away": None}}


def test_update_and_replacing_a_nested_object(python_crew):
    runner = python_crew("scorer", "handlers:replace")
    reply = runner.call(1, context=SNAPSHOT)
    assert reply["context_patch"] == {"period": 2, "score": {"home": 0, "away": None}}


def test_returned_patch_is_merged_on_top_of_ctx_writes(python_crew):
    runner = python_crew("scorer", "handlers:with_patch")
    reply = runner.call(1, [event("goal", {})], context=SNAPSHOT)
    assert reply == {
        "type": "result",
        "id": 1,
        "actions": [],
        "context_patch": {"period": 2, "score": {"away": 9}},
    }


def test_no_context_patch_when_ctx_is_only_read(python_crew):
    runner = python_crew("scorer", "handlers:untouched")
    reply = runner.call(1, context=SNAPSHOT)
    assert reply == {
        "type": "result",
        "id": 1,
        "actions": [{"kind": "read", "payload": {"home": 1, "away": 2}}],
    }


def test_deps_are_passed_through(python_crew):
    runner = python_crew("scorer", "handlers:with_deps")
    deps = {"crew:vision@-1": [], "event:frame@0": [event("frame", 1)]}
    assert runner.call(1, deps=deps)["actions"] == [
        {"kind": "deps", "payload": ["crew:vision@-1", "event:frame@0"]}
    ]


def test_returning_none_means_no_actions(python_crew):
    runner = python_crew("hostile", "handlers:returns_none")
    assert runner.call(1) == {
        "type": "result",
        "id": 1,
        "actions": [],
        "context_patch": {"touched": True},
    }


def test_exception_in_react_is_an_error_reply_and_the_runner_keeps_serving(python_crew):
    runner = python_crew("hostile", "handlers:raises")
    assert runner.call(1) == {
        "type": "error",
        "id": 1,
        "message": "crew 'hostile': raises() in module 'handlers' raised ValueError: bad frame",
    }
    assert runner.call(2, [event("frame", "ok")])["actions"] == [{"kind": "ok", "payload": None}]
    stderr = runner.wait_for_stderr("Traceback", "bad frame")
    assert "Traceback" in stderr and "bad frame" in stderr


def test_sys_exit_in_react_is_an_error_reply(python_crew):
    runner = python_crew("hostile", "handlers:exits")
    reply = runner.call(1)
    assert reply["message"] == "crew 'hostile': exits() in module 'handlers' raised SystemExit: 3"
    assert runner.call(2)["type"] == "error"
    assert runner.proc.poll() is None


def test_error_message_has_no_host_paths(python_crew):
    runner = python_crew("hostile", "handlers:opens_missing_file")
    message = runner.call(1)["message"]
    assert message == (
        "crew 'hostile': opens_missing_file() in module 'handlers' raised FileNotFoundError: "
        "[Errno 2] No such file or directory: 'data/missing.json'"
    )


def test_wrong_signature_is_an_error_reply(python_crew):
    runner = python_crew("hostile", "handlers:wrong_signature")
    message = runner.call(1)["message"]
    assert message.startswith(
        "crew 'hostile': wrong_signature() in module 'handlers' raised TypeError:"
    )


@pytest.mark.parametrize(
    ("function", "problem"),
    [
        ("returns_dict", "returned a dict where a list of actions was expected"),
        ("returns_triple", "returned a tuple of 3; return a list of actions or a tuple"),
        ("returns_bad_patch", "returned a context patch of type list"),
        ("reserved_kind", "invalid action at index 1: kind '__hb' is reserved"),
        ("bad_ttl", "invalid action at index 0: 'ttl_ms' must be an integer from 1 to 300000"),
        ("unknown_field", "invalid action at index 0: unknown field 'ts'"),
        ("not_json", "the result cannot be sent as JSON: Object of type set"),
        ("nan_payload", "the result cannot be sent as JSON: Out of range float values"),
    ],
)
def test_bad_return_value_is_an_error_reply(python_crew, function, problem):
    runner = python_crew("hostile", f"handlers:{function}")
    reply = runner.call(1)
    assert reply["type"] == "error" and reply["id"] == 1
    assert reply["message"].startswith("crew 'hostile': ")
    assert problem in reply["message"]
    assert runner.call(2)["id"] == 2, "the runner stays up"


@pytest.mark.parametrize(
    ("fixture", "module", "message"),
    [
        (
            "echo",
            "nowhere",
            "crew 'echo': cannot import module 'nowhere': "
            "ModuleNotFoundError: No module named 'nowhere'",
        ),
        (
            "syntax_error",
            "handlers",
            "crew 'syntax_error': cannot import module 'handlers': "
            "SyntaxError: expected ':' (handlers.py, line 4)",
        ),
        (
            "import_raises",
            "handlers",
            "crew 'import_raises': cannot import module 'handlers': "
            "RuntimeError: no model configured",
        ),
        ("echo", "handlers:missing", "crew 'echo': module 'handlers' has no function 'missing'"),
        (
            "hostile",
            "handlers:not_callable",
            "crew 'hostile': module 'handlers' has no function 'not_callable'",
        ),
        ("echo", "", "crew 'echo': runner.module is missing"),
    ],
)
def test_load_failure_still_sends_ready_then_answers_every_call_with_it(
    spawn, fixture, module, message
):
    runner = spawn(FIXTURES / fixture)
    assert runner.hello(python_config(fixture, module))["type"] == "ready"
    for call_id in (1, 2):
        reply = runner.call(call_id)
        assert reply["type"] == "error" and reply["id"] == call_id
        assert reply["message"].startswith(message)
        assert "Traceback" not in reply["message"] and "/" not in reply["message"]


def test_import_failure_traceback_goes_to_stderr(spawn):
    runner = spawn(FIXTURES / "import_raises")
    runner.hello(python_config("import_raises", "handlers"))
    runner.call(1)
    stderr = runner.wait_for_stderr("Traceback", "no model configured")
    assert "Traceback" in stderr and "no model configured" in stderr


@pytest.mark.parametrize(
    ("runner_config", "message"),
    [
        ({"kind": "command", "command": ["./x"]}, "unknown runner kind 'command'"),
        ({"kind": "telepathy"}, "unknown runner kind 'telepathy'"),
        (None, "the runtime config has no runner.kind"),
    ],
)
def test_unknown_kind_still_sends_ready_then_answers_with_error(spawn, runner_config, message):
    runner = spawn(FIXTURES / "echo")
    config = {"crew": "echo", "triggers": ["*"]}
    if runner_config is not None:
        config["runner"] = runner_config
    assert runner.hello(config)["type"] == "ready"
    reply = runner.call(1)
    assert reply["type"] == "error"
    assert reply["message"].startswith(f"crew 'echo': {message}")
    assert "python" in reply["message"], "names the kinds it does run"


def test_a_crew_reads_the_call_id_it_answers(python_crew):
    runner = python_crew("idempotent", "handlers")
    reply = runner.call(7)
    assert reply["actions"] == [
        {"kind": "charged", "payload": {"idempotency_key": "match1:0:crew-7"}}
    ]
