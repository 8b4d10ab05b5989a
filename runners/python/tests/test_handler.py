"""Checks shared by all runner kinds: action validity and error message hygiene."""

from __future__ import annotations

import pytest

from live_crew_runner.handler import CrewError, check_actions, describe, public_message


def test_valid_actions_pass_and_get_a_payload():
    actions = [
        {"kind": "a_1", "payload": {"x": 1}, "ttl_ms": 1},
        {"kind": "B" * 50, "ttl_ms": 300_000},
    ]
    checked = check_actions(actions, "react()")
    assert checked == [actions[0], {"kind": "B" * 50, "ttl_ms": 300_000, "payload": None}]
    assert "payload" not in actions[1], "the crew's own objects are not modified"


def test_valid_actions_are_returned_as_is():
    actions = [{"kind": "a", "payload": None}, {"kind": "b", "payload": [], "ttl_ms": None}]
    assert check_actions(actions, "react()") is actions


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        ("goal", "expected a dict, got a str"),
        ({"payload": 1}, "'kind' must be a string"),
        ({"kind": ""}, "kind '' must be 1 to 50"),
        ({"kind": "a" * 51}, "must be 1 to 50"),
        ({"kind": "goal-scored"}, "must be 1 to 50 of A-Z, a-z, 0-9 and _"),
        ({"kind": "é"}, "must be 1 to 50"),
        ({"kind": "__hb"}, "kind '__hb' is reserved"),
        ({"kind": "a", "ttl_ms": 0}, "'ttl_ms' must be an integer from 1 to 300000, got 0"),
        ({"kind": "a", "ttl_ms": 300_001}, "got 300001"),
        ({"kind": "a", "ttl_ms": 5.0}, "got 5.0"),
        ({"kind": "a", "ttl_ms": True}, "got True"),
        ({"kind": "a", "crew": "x", "slice": 1}, "unknown field 'crew', 'slice'"),
    ],
)
def test_invalid_actions_are_named_with_their_index(action, problem):
    with pytest.raises(CrewError) as raised:
        check_actions([{"kind": "ok"}, action], "react() in module 'm'")
    assert str(raised.value).startswith(
        "react() in module 'm' returned an invalid action at index 1: "
    )
    assert problem in str(raised.value)


def test_actions_must_be_a_list():
    with pytest.raises(CrewError, match="returned a tuple where a list of actions was expected"):
        check_actions(({"kind": "a"},), "react()")


def test_describe_names_type_and_message():
    assert describe(ValueError("bad frame")) == "ValueError: bad frame"
    assert describe(KeyError("k")) == "KeyError: 'k'"
    assert describe(RuntimeError()) == "RuntimeError"


@pytest.mark.parametrize(
    ("message", "public"),
    [
        ("No such file: '/srv/crews/x/data/a.json'", "No such file: 'data/a.json'"),
        (
            "cannot import name 'y' from 'pkg' (/srv/crews/x/pkg/__init__.py)",
            "cannot import name 'y' from 'pkg' (pkg/__init__.py)",
        ),
        ("open '/usr/lib/python3/json/x.py' failed", "open 'x.py' failed"),
        ("see https://example.com/a/b and 1/2/3", "see https://example.com/a/b and 1/2/3"),
        ("relative/path/x stays", "relative/path/x stays"),
    ],
)
def test_public_message_hides_host_paths(message, public):
    assert public_message(message, "/srv/crews/x") == public


def test_public_message_is_bounded():
    assert len(public_message("x" * 100_000, "/c")) < 2100
