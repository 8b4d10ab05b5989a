"""Runner kinds: ``config["runner"]["kind"]`` picks the module that builds the handler.

Kind modules are imported only when a crew uses them, so a heavy dependency (CrewAI) is
imported by its own adapter and nowhere else. Each module provides
``load(hello: Hello) -> Handler`` and raises ``CrewError`` when the crew cannot be loaded.
"""

from __future__ import annotations

import sys

from live_crew_runner.handler import CrewError, failing

TYPE_CHECKING = False
if TYPE_CHECKING:
    from live_crew_runner.handler import Handler
    from live_crew_runner.protocol import Hello

_KINDS: dict[str, str] = {
    "python": "live_crew_runner.kinds.python",
    "crewai": "live_crew_runner.kinds.crewai",
    "prompt": "live_crew_runner.kinds.prompt",
}


def load_handler(hello: Hello) -> Handler:
    """The crew's handler; a crew that cannot be loaded gets one that reports why."""
    runner = hello.config.get("runner")
    kind = runner.get("kind") if isinstance(runner, dict) else None
    module_name = _KINDS.get(kind) if isinstance(kind, str) else None
    try:
        if module_name is None:
            raise CrewError(_unknown_kind(kind))
        __import__(module_name)  # importlib.import_module without importing importlib
        return sys.modules[module_name].load(hello)  # type: ignore[no-any-return]
    except CrewError as exc:
        print(f"live-crew-runner: crew '{hello.crew}': {exc}", file=sys.stderr)
        return failing(str(exc))


def _unknown_kind(kind: object) -> str:
    known = ", ".join(sorted(_KINDS))
    if kind is None:
        return f"the runtime config has no runner.kind; the bundled Python runner runs: {known}"
    return f"unknown runner kind {kind!r}; the bundled Python runner runs: {known}"
