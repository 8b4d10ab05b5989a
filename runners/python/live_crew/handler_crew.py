"""The crew side of ``Orchestrator``: one event handler run as a ``python`` crew.

``Orchestrator`` gives every handler a crew whose folder holds a small generated module
(``crew_module``). The ``python`` kind imports it in the crew's sandboxed process; it puts
the handler's project on ``sys.path`` and calls ``react_for``, which imports the handler's
module by name, as ``CrewOrchestrator``'s crews are, and returns the crew's ``react``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from live_crew.models import Action, Event
from live_crew.orchestrator import LiveCrewError

React = Callable[[list[dict[str, Any]], dict[str, Any], dict[str, Any]], list[dict[str, Any]]]

#: The generated module, in the crew folder (which the ``python`` kind puts first on
#: ``sys.path``); the leading ``_`` keeps it clear of the user's module names.
MODULE = "_live_crew_handler"
#: How a script says "do not run me on import"; ``Orchestrator`` looks for it in errors.
GUARD_HINT = 'put the code that runs it under `if __name__ == "__main__":`'

#: The module a handler's crew is importing, while it does: an ``Orchestrator`` made then
#: is a script's top-level code that lacks the ``__main__`` guard.
importing: str | None = None


class HandlerError(Exception):
    """A handler raised, or returned something other than actions."""


def crew_module(paths: list[str], module: str, handler: str) -> str:
    """The source of the crew module that runs ``handler`` of ``module``; ``paths`` hold
    ``live_crew`` and the handler's top-level package."""
    return (
        f'"""Written by live_crew.Orchestrator: runs handler {handler}() of module {module}."""\n'
        "import sys\n\n"
        f"sys.path[1:1] = [path for path in {paths!r} if path not in sys.path]\n"
        "from live_crew.handler_crew import react_for  # noqa: E402\n\n"
        f"react = react_for({module!r}, {handler!r})\n"
    )


def react_for(module_name: str, name: str) -> React:
    """The crew's ``react``: calls handler ``name`` of ``module_name`` once per event of
    the slice, oldest first, as the earlier API did, and sends what it returns."""
    global importing
    importing = module_name
    try:
        module = importlib.import_module(module_name)
    finally:
        importing = None
    handler = getattr(module, name, None)
    if not callable(handler):
        raise LiveCrewError(f"module '{module_name}' has no handler '{name}'")

    def react(
        events: list[dict[str, Any]], ctx: dict[str, Any], deps: dict[str, Any]
    ) -> list[dict[str, Any]]:
        actions: list[dict[str, Any]] = []
        for record in events:
            try:
                returned = handler(Event.from_dict(record))
            except Exception as exc:
                raise HandlerError(
                    f"{name}() raised {type(exc).__name__}: {exc} "
                    f"on event '{record['kind']}' at {record['ts']}"
                ) from exc
            actions += _sent(returned, name)
        return actions

    return react


def _sent(returned: object, name: str) -> list[dict[str, Any]]:
    """What a handler returned, as the crew's actions: an Action, a list, or None."""
    if returned is None:
        return []
    items = returned if isinstance(returned, list) else [returned]
    actions = []
    for item in items:
        if not isinstance(item, Action):
            raise HandlerError(
                f"{name}() returned {type(item).__name__}: return an Action "
                "(Action.create(kind, payload)), a list of Actions, or None"
            )
        actions.append(item.to_dict())
    return actions
