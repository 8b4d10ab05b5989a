"""ctx semantics: the deep copy, the diff into a merge patch, and patch application."""

from __future__ import annotations

import json
import random

import pytest

from live_crew_runner.context import apply_patch, copy_json, diff, same


def patch_for(snapshot, change):
    """What a call that runs `change(ctx)` sends as its context_patch."""
    ctx = copy_json(snapshot)
    change(ctx)
    return diff(snapshot, ctx)


def test_copy_is_deep():
    snapshot = {"a": {"b": [1, {"c": 2}]}}
    ctx = copy_json(snapshot)
    ctx["a"]["b"][1]["c"] = 3
    ctx["a"]["b"].append(4)
    assert snapshot == {"a": {"b": [1, {"c": 2}]}}


@pytest.mark.parametrize(
    ("change", "patch"),
    [
        (lambda ctx: None, {}),
        (lambda ctx: ctx.__setitem__("new", 1), {"new": 1}),
        (lambda ctx: ctx["score"].__setitem__("home", 5), {"score": {"home": 5}}),
        (lambda ctx: ctx.setdefault("a", {}).__setitem__("b", 2), {"a": {"b": 2}}),
        (lambda ctx: ctx["deep"]["x"]["y"].__setitem__("z", 0), {"deep": {"x": {"y": {"z": 0}}}}),
        (lambda ctx: ctx.__delitem__("name"), {"name": None}),
        (lambda ctx: ctx.pop("score"), {"score": None}),
        (lambda ctx: ctx.clear(), {"score": None, "name": None, "tags": None, "deep": None}),
        (lambda ctx: ctx.__setitem__("name", None), {"name": None}),
        (lambda ctx: ctx.__setitem__("never_there", None), {}),
        (lambda ctx: ctx.update(name="b", extra=[1]), {"name": "b", "extra": [1]}),
        (lambda ctx: ctx["tags"].append("c"), {"tags": ["a", "b", "c"]}),
        (lambda ctx: ctx["tags"].sort(reverse=True), {"tags": ["b", "a"]}),
        (lambda ctx: ctx.__setitem__("score", {"home": 1}), {"score": {"away": None}}),
        (lambda ctx: ctx.__setitem__("score", 3), {"score": 3}),
        (lambda ctx: ctx.__setitem__("name", {"first": "x"}), {"name": {"first": "x"}}),
        (lambda ctx: ctx["score"].__setitem__("home", True), {"score": {"home": True}}),
        (lambda ctx: ctx["score"].__setitem__("home", 1.0), {"score": {"home": 1.0}}),
        (lambda ctx: ctx.__setitem__("name", "a"), {}),
    ],
    ids=lambda value: "" if callable(value) else json.dumps(value),
)
def test_ctx_changes_become_merge_patches(change, patch):
    snapshot = {
        "score": {"home": 1, "away": 0},
        "name": "a",
        "tags": ["a", "b"],
        "deep": {"x": {"y": {"z": 1}}},
    }
    assert patch_for(snapshot, change) == patch


# RFC 7386, Appendix A: the cases whose target and patch are objects.
RFC_7386_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386_EXAMPLES)
def test_apply_patch_matches_rfc_7386(target, patch, result):
    apply_patch(target, patch)
    assert target == result


def test_diff_then_apply_reproduces_the_change_on_random_documents():
    rng = random.Random(7386)
    for _ in range(2000):
        before = without_nulls(random_object(rng, depth=3))  # committed contexts hold no nulls
        after = mutate(rng, copy_json(before))
        patch = diff(before, after)
        json.dumps(patch)  # the patch is JSON
        target = copy_json(before)
        apply_patch(target, patch)
        assert same(target, without_nulls(after)), (before, after, patch)
        assert diff(target, target) == {}


def test_same_is_json_equality():
    assert same({"a": [1, {"b": 2.5}]}, {"a": [1, {"b": 2.5}]})
    assert not same(1, True)
    assert not same(1, 1.0)
    assert not same([1], [1, 2])
    assert not same({"a": 1}, {"b": 1})


def random_value(rng, depth):
    choice = rng.randrange(8 if depth > 0 else 5)
    if choice == 0:
        return rng.randrange(3)
    if choice == 1:
        return rng.choice([True, False, 1.5, 0.0])
    if choice == 2:
        return rng.choice("xyz")
    if choice == 3:
        return None
    if choice == 4:
        return [rng.randrange(3) for _ in range(rng.randrange(3))]
    return random_object(rng, depth - 1)


def random_object(rng, depth):
    return {rng.choice("abcd"): random_value(rng, depth) for _ in range(rng.randrange(4))}


def mutate(rng, obj):
    for _ in range(rng.randrange(4)):
        key = rng.choice("abcde")
        action = rng.randrange(4)
        if action == 0:
            obj.pop(key, None)
        elif action == 1 and isinstance(obj.get(key), dict):
            mutate(rng, obj[key])
        else:
            obj[key] = random_value(rng, 2)
    return obj


def without_nulls(value):
    """What a document looks like once None values count as absent (objects only)."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    return value
