"""The runner's own JSON path gives what the json module gives, byte for byte."""

from __future__ import annotations

import json
import random
import re

import pytest

from live_crew_runner.handler import CrewError, check_actions
from live_crew_runner.protocol import HostError, decode, encode, encode_result


def reference(message: object) -> bytes:
    text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode()


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"call","id":1,"events":[],"context":{},"deps":{}}\n',
        b'{"type":"x","n":[1,-2,3.5,1e400,-0.0,18446744073709551615],"s":"\\u00e9\\ud83d\\ude00"}\n',
        '{"type":"x","s":"ünïcode"}\n'.encode(),
        b'{"type":"x","c":[NaN,Infinity,-Infinity],"b":[true,false,null]}\n',
        b'  {"type":"x"}  \n',
        b'\xef\xbb\xbf{"type":"x"}\n',
        b'{"type":"x"}',
        b'{"type":"x"} \t\r\n',
    ],
)
def test_decode_matches_json_loads(line):
    got, expected = decode(line), json.loads(line)
    assert repr(got) == repr(expected)  # repr: NaN != NaN


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"x"}{"type":"y"}\n',
        b'{"type":"x",}\n',
        b'{"type":"x"\n',
        b'{"type":"\xff"}\n',
        b'{"type":"x\x01"}\n',
        b"\n",
    ],
)
def test_decode_rejects_what_json_loads_rejects(line):
    with pytest.raises(ValueError):  # JSONDecodeError, or UnicodeDecodeError
        json.loads(line)
    with pytest.raises(HostError, match="not JSON"):
        decode(line)


def test_decode_wants_an_object_with_a_type():
    for line in (b"[1]\n", b'{"kind":"x"}\n', b'{"type":1}\n'):
        with pytest.raises(HostError, match="not a protocol message"):
            decode(line)


@pytest.mark.parametrize(
    ("actions", "patch"),
    [
        ([], None),
        ([], {}),
        ([{"kind": "a", "payload": {"x": [1, 2.5, None, True, "é\n\u2028"]}}], None),
        ([{"payload": 1, "kind": "b", "ttl_ms": 5}], {"k": None, "n": {"m": 1}}),
    ],
)
def test_result_lines_match_json_dumps(actions, patch):
    message = {"type": "result", "id": 18446744073709551615, "actions": actions}
    if patch:
        message["context_patch"] = patch
    assert encode_result(18446744073709551615, actions, patch) == reference(message)
    assert encode(message) == reference(message)


def test_encode_errors_match_json_and_leave_no_trace():
    cycle: list[object] = []
    cycle.append(cycle)
    for bad, error in (
        ({1, 2}, "Object of type set is not JSON serializable"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        (cycle, "maximum recursion depth exceeded"),
        ({"deep": [object()]}, "Object of type object is not JSON serializable"),
    ):
        with pytest.raises((TypeError, ValueError, RecursionError), match=error):
            encode_result(1, [{"kind": "a", "payload": bad}], None)
        with pytest.raises((TypeError, ValueError, RecursionError), match=error):
            json.dumps(bad, allow_nan=False, check_circular=False)
        # The same lists and dicts encode fine afterwards: no stale cycle markers.
        shared = [{"kind": "a", "payload": [1]}]
        assert encode_result(2, shared, {"p": shared[0]}) == reference(
            {"type": "result", "id": 2, "actions": shared, "context_patch": {"p": shared[0]}}
        )
    with pytest.raises(UnicodeEncodeError):
        encode_result(1, [{"kind": "a", "payload": "\ud800"}], None)


def test_kind_check_matches_the_protocol_pattern():
    pattern = re.compile(r"[A-Za-z0-9_]{1,50}")
    rng = random.Random(7)
    alphabet = "aZ09_-. é\n٣ﬁ"
    samples = ["", "_", "__", "a" * 50, "a" * 51, "a\n", "K", "k_1", "\u0661", "\u01c5", "\u00df"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))) for _ in range(500)]
    for kind in samples:
        valid = bool(pattern.fullmatch(kind)) and not kind.startswith("__")
        for _ in range(2):  # checked, then cached
            try:
                check_actions([{"kind": kind, "payload": None}], "react()")
            except CrewError:
                assert not valid, kind
            else:
                assert valid, kind
