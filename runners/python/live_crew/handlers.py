"""The seed prototype's Python API (SPEC §17): ``@event_handler``, ``Orchestrator``.

Code written for the earlier live-crew keeps working: ``fn(event)`` handlers marked with
``@event_handler`` and registered with ``register_handler``, then ``await
orchestrator.run()``. Underneath, each handler is a ``python`` crew of its own, named
after it, in the sandboxed host; its process imports the handler by module path
(``handler_crew``), so a script that defines handlers needs ``if __name__ ==
"__main__":`` around its run.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

from live_crew import handler_crew
from live_crew.models import Action, Event
from live_crew.orchestrator import (
    Events,
    LiveCrewError,
    crew_reference,
    run_host,
    write_runtime,
)

Handler = TypeVar("Handler", bound=Callable[..., Any])
Kinds = str | Sequence[str] | None

#: Where ``@event_handler`` keeps a handler's kinds, on the function itself.
KINDS_ATTR = "__live_crew_kinds__"
#: live_crew's own folder on ``sys.path``, which the crews need to import it.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_MAX_NAME_CHARS = 50

_log = logging.getLogger("live_crew")


@overload
def event_handler(kinds: Handler) -> Handler: ...
@overload
def event_handler(kinds: Kinds = None) -> Callable[[Handler], Handler]: ...
def event_handler(kinds: Handler | Kinds = None) -> Handler | Callable[[Handler], Handler]:
    """Marks ``fn(event) -> Action | list[Action] | None`` as a handler of ``kinds``: one
    kind, a list, or none for every event; bare ``@event_handler`` works too. The function
    itself is returned, so it stays importable under its name and callable as before."""
    if callable(kinds):
        setattr(kinds, KINDS_ATTR, None)
        return kinds

    def mark(handler: Handler) -> Handler:
        setattr(handler, KINDS_ATTR, _kind_list(kinds))
        return handler

    return mark


@dataclass
class OrchestrationResult:
    """What a run did, with the earlier API's counts, plus the actions (in output
    order) and the host's error records (a failing handler is one, not an exception)."""

    events_processed: int
    actions_generated: int
    time_slices: int
    actions: list[Action[Any]] = field(repr=False)
    errors: list[dict[str, Any]] = field(repr=False)
    returncode: int
    log: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Orchestrator:
    """Handlers registered by function; ``run`` starts the host over the events."""

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        events: Events | Sequence[Event[Any]] | None = None,
    ) -> None:
        """``config`` is a ``live-config.yaml``; ``events`` what ``run`` reads by default."""
        if handler_crew.importing is not None:
            raise LiveCrewError(
                f"module '{handler_crew.importing}' starts an Orchestrator when imported, and "
                "each handler's crew process imports it to find the handler: "
                + handler_crew.GUARD_HINT
            )
        self._config = Path(config).resolve() if config is not None else None
        self._events = events
        self._crews: dict[str, tuple[dict[str, Any], str]] = {}

    @classmethod
    def from_file(
        cls, events_file: str | os.PathLike[str], config: str | os.PathLike[str] | None = None
    ) -> Orchestrator:
        """Runs over a JSON array or JSON Lines file of events."""
        return cls(config=config, events=Path(events_file).resolve())

    @classmethod
    def from_config(
        cls,
        config_file: str | os.PathLike[str],
        events: Events | Sequence[Event[Any]] | None = None,
    ) -> Orchestrator:
        """Runs with a ``live-config.yaml``; the events are given here or to ``run``."""
        return cls(config=config_file, events=events)

    def register_handler(self, handler: Callable[[Event[Any]], Any], kinds: Kinds = None) -> None:
        """Adds ``handler`` for ``kinds``; without them, for the kinds it was marked with
        by ``@event_handler``, else for every event. It runs as a crew named after it."""
        module, name, root = crew_reference(handler)
        if not (
            len(name) <= _MAX_NAME_CHARS and name.isascii() and name.replace("_", "a").isalnum()
        ):
            raise LiveCrewError(
                f"handler {name!r} cannot name its crew: define it with def at the top level "
                "of a module, with a name of at most 50 of A-Z, a-z, 0-9 and _"
            )
        if not all(part.isidentifier() for part in module.split(".")):
            raise LiveCrewError(
                f"handler '{name}' is in '{module}', which is no module name that its crew "
                "process could import; rename the file"
            )
        if name in self._crews:
            raise LiveCrewError(f"handler '{name}' is registered already")
        paths = list(dict.fromkeys([_PACKAGE_ROOT, root]))
        document: dict[str, Any] = {
            "crew": name,
            "triggers": _kind_list(kinds) or getattr(handler, KINDS_ATTR, None) or ["*"],
            "runner": {
                "kind": "python",
                "module": f"{handler_crew.MODULE}:react",
                "python": sys.executable,
                # The crew module puts these on sys.path; here they are for the sandbox,
                # which lets the crew read them.
                "pythonpath": paths,
            },
            "context": {"read": [], "write": []},  # handlers see no shared context
        }
        self._crews[name] = (document, handler_crew.crew_module(paths, module, name))

    def write_crews(self, folder: str | os.PathLike[str]) -> Path:
        """Writes the crews folder: per handler, a runtime file and the crew module."""
        for document, source in self._crews.values():
            crew = write_runtime(folder, document)
            (crew / f"{handler_crew.MODULE}.py").write_text(source, encoding="utf-8")
        return Path(folder)

    async def run(self, events: Events | Sequence[Event[Any]] | None = None) -> OrchestrationResult:
        """Runs every handler over ``events`` (else the orchestrator's own) until they
        end. A failing handler is logged and in ``errors``; the run goes on, as before."""
        import asyncio

        events = events if events is not None else self._events
        if events is None:
            raise LiveCrewError("no events: use Orchestrator.from_file(path) or run(events)")
        if not self._crews:
            raise LiveCrewError("no handlers registered; call register_handler first")
        if not isinstance(events, (str, os.PathLike)):
            events = [e.to_dict() if isinstance(e, Event) else e for e in events]
        done = await asyncio.to_thread(run_host, self.write_crews, events, self._config)
        for error in done.errors:
            if handler_crew.GUARD_HINT in error["message"]:
                raise LiveCrewError(error["message"])
        for error in done.errors:
            _log.warning("%s", error["message"])
        summary = done.summary
        return OrchestrationResult(
            events_processed=summary["events"],
            actions_generated=len(done.actions),
            time_slices=summary["slices"],
            actions=[Action.from_dict(action) for action in done.actions],
            errors=done.errors,
            returncode=done.returncode,
            log=done.log,
        )


def _kind_list(kinds: Kinds) -> list[str] | None:
    if kinds is None:
        return None
    return [kinds] if isinstance(kinds, str) else list(kinds)
