"""What every runner kind provides, and the result checks they share.

A runner kind turns the crew's config into a ``Handler``: a callable that answers one
``call`` with ``(actions, context_patch)`` or raises ``CrewError``. Everything a crew gets
wrong becomes a ``CrewError``, which the runner sends as an ``error`` reply and survives.
"""

from __future__ import annotations

from live_crew_runner.constants import MAX_TTL_MS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from live_crew_runner.protocol import Call

    Action = dict[str, Any]
    Patch = dict[str, Any]
    Outcome = tuple[list[Action], Patch]

    class Handler(Protocol):
        def __call__(self, call: Call) -> Outcome: ...


#: Error messages are for humans and must fit comfortably in one protocol line.
MAX_MESSAGE_CHARS = 2000

_MAX_KIND_CHARS = 50
_ACTION_FIELDS = frozenset({"kind", "payload", "ttl_ms"})
# Kinds already found valid: a crew uses a handful, so checking one is a set lookup.
_valid_kinds: set[str] = set()
_MAX_VALID_KINDS = 1024
# The directory part of an absolute path, e.g. "/srv/app/" in "'/srv/app/x.json'"; the
# look-behind skips URLs ("http://h/a/") and relative paths ("a/b/"). Compiled by ``re``
# on first use: only error messages need it, and importing ``re`` costs startup time.
_ABSOLUTE_DIRS = r"(?<![\w.:/~-])/(?:[^\s/'\"()<>:,;]+/)+"


class CrewError(Exception):
    """The crew's code or configuration failed; the message goes to the host as is."""


def failing(message: str) -> Handler:
    """A handler that answers every call with ``message``.

    Used when the crew cannot be loaded: the runner still completes the handshake, so the
    host reports the reason with each call (and disables the crew after ``max_errors``)
    instead of restarting a runner that crashes at startup.
    """

    def handle(call: Call) -> Outcome:
        raise CrewError(message)

    return handle


def check_actions(actions: object, source: str) -> list[Action]:
    """Checks actions against the host's rules and fills a missing ``payload`` with null.

    The host would kill and restart the runner over an invalid action; catching it here
    costs the crew an ``error`` reply instead, with a message that says what is wrong.
    """
    if type(actions) is not list:
        raise CrewError(
            f"{source} returned {_type_name(actions)} where a list of actions was expected"
        )
    checked = actions
    for index, action in enumerate(actions):
        # The common case in few steps: {"kind": <a kind seen valid before>, "payload": ...}.
        if type(action) is dict and len(action) == 2 and "payload" in action:
            kind = action.get("kind")
            if type(kind) is str and kind in _valid_kinds:
                continue
        problem = _action_problem(action)
        if problem is not None:
            raise CrewError(f"{source} returned an invalid action at index {index}: {problem}")
        if "payload" not in action:
            if checked is actions:
                checked = list(actions)  # the crew's own list stays untouched
            checked[index] = {**action, "payload": None}
    return checked


def _action_problem(action: Any) -> str | None:
    if type(action) is not dict:
        return f"expected a dict, got {_type_name(action)}"
    kind = action.get("kind")
    if type(kind) is not str:
        return "'kind' must be a string"
    if kind not in _valid_kinds:
        # ^[A-Za-z0-9_]{1,50}$ without ``re``: for ASCII text, isalnum() is [A-Za-z0-9].
        if not (
            len(kind) <= _MAX_KIND_CHARS and kind.isascii() and kind.replace("_", "a").isalnum()
        ):
            return f"kind {kind!r} must be 1 to 50 of A-Z, a-z, 0-9 and _"
        if kind.startswith("__"):
            return f"kind {kind!r} is reserved: kinds starting with '__' belong to the system"
        if len(_valid_kinds) < _MAX_VALID_KINDS:
            _valid_kinds.add(kind)
    ttl = action.get("ttl_ms")  # None (or absent) means the host's default
    if ttl is not None and (type(ttl) is not int or not 1 <= ttl <= MAX_TTL_MS):
        return f"'ttl_ms' must be an integer from 1 to {MAX_TTL_MS}, got {ttl!r}"
    # "kind" is there; any key beyond "payload" and "ttl_ms" is unknown.
    if len(action) > 1 + ("payload" in action) + ("ttl_ms" in action):
        unknown = ", ".join(sorted(repr(key) for key in action.keys() - _ACTION_FIELDS))
        return f"unknown field {unknown}; an action has 'kind', 'payload' and optional 'ttl_ms'"
    return None


def describe(exc: BaseException) -> str:
    """``ValueError: bad frame``: the exception's type and message, no traceback."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def public_message(message: str, crew_dir: str) -> str:
    """The error text for the host: free of host paths, and bounded in size.

    Paths inside the crew folder become relative to it; any other absolute path is cut to
    its file name.
    """
    import re

    if crew_dir.strip("/"):
        message = message.replace(crew_dir.rstrip("/") + "/", "")
    message = re.sub(_ABSOLUTE_DIRS, "", message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "... (truncated)"
    return message


def _type_name(value: object) -> str:
    return "None" if value is None else f"a {type(value).__name__}"
