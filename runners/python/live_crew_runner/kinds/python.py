"""The ``python`` kind: ``react(events, ctx, deps)`` from a module in the crew folder.

``runner.module`` is ``"module"`` or ``"module:function"`` (the function defaults to
``react``). The function returns a list of actions, or ``(actions, context_patch)``, or
None for no actions. ``ctx`` is the call's own deep copy of the context snapshot; what the
function changes in it, plus the returned patch on top, becomes the call's merge patch.
"""

from __future__ import annotations

import sys

from live_crew_runner.context import apply_patch, copy_json, diff
from live_crew_runner.handler import CrewError, check_actions, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

    from live_crew_runner.handler import Action, Handler, Outcome
    from live_crew_runner.protocol import Call, Hello

    React = Callable[[list[Any], dict[str, Any], dict[str, Any]], Any]

# Crew code is caught broadly: an exception, or sys.exit(), in one call must not take the
# runner down. KeyboardInterrupt still stops it (someone pressed Ctrl-C at a terminal).
_CREW_FAILURES = (Exception, SystemExit)


def load(hello: Hello) -> Handler:
    spec = hello.config["runner"].get("module")
    if not isinstance(spec, str) or not spec:
        raise CrewError("runner.module is missing; set it to 'module' or 'module:function'")
    module_name, _, function_name = spec.partition(":")
    function_name = function_name or "react"
    sys.path.insert(0, hello.crew_dir)
    try:
        module = _import(module_name)
    except _CREW_FAILURES as exc:
        import traceback

        traceback.print_exc()
        raise CrewError(f"cannot import module '{module_name}': {describe(exc)}") from None
    react = getattr(module, function_name, None)
    if not callable(react):
        raise CrewError(f"module '{module_name}' has no function '{function_name}'")
    return PythonHandler(react, f"{function_name}() in module '{module_name}'")


def _import(name: str) -> ModuleType:
    """``importlib.import_module(name)``, without importing ``importlib`` for it."""
    if name.startswith("."):  # a relative name: let importlib say what is wrong
        import importlib

        return importlib.import_module(name)
    __import__(name)
    return sys.modules[name]


class PythonHandler:
    """Calls the crew's function; ``source`` names it in error messages."""

    def __init__(self, react: React, source: str) -> None:
        self._react = react
        self._source = source

    def __call__(self, call: Call) -> Outcome:
        snapshot = call["context"]
        ctx = copy_json(snapshot) if snapshot else {}
        try:
            returned = self._react(call["events"], ctx, call["deps"])
        except _CREW_FAILURES as exc:
            import traceback

            # The host log gets the crew's frames (ours are skipped); the reply, one line.
            frames = exc.__traceback__.tb_next if exc.__traceback__ else None
            traceback.print_exception(type(exc), exc, frames)
            raise CrewError(f"{self._source} raised {describe(exc)}") from None
        if type(returned) is list:  # the common case
            actions = returned
        else:
            actions, returned_patch = self._unpack(returned)
            if returned_patch:
                apply_patch(ctx, returned_patch)
        patch = diff(snapshot, ctx) if ctx or snapshot else {}  # empty and still empty: none
        return check_actions(actions, self._source), patch

    def _unpack(self, returned: Any) -> tuple[list[Action], dict[str, Any] | None]:
        if returned is None:
            return [], None
        if type(returned) is not tuple:
            return returned, None
        if len(returned) != 2:
            raise CrewError(
                f"{self._source} returned a tuple of {len(returned)}; "
                "return a list of actions or a tuple (actions, context_patch)"
            )
        actions, patch = returned
        if patch is not None and not isinstance(patch, dict):
            raise CrewError(
                f"{self._source} returned a context patch of type {type(patch).__name__}; "
                "a context patch is a dict (JSON merge patch)"
            )
        return actions, patch
