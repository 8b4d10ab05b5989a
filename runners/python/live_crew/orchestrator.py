"""``CrewOrchestrator``: register CrewAI crews in Python, run them with the live-crew host.

A thin front (SPEC §11): ``run`` writes one runtime file per registered crew into a
private crews folder and runs the ``live-crew`` binary on it. Every crew still runs in
its own sandboxed process, which imports the crew by its module path (``module:attr``),
so a crew must be reachable from a module: a ``Crew`` object or a ``@CrewBase`` class or
factory function defined at the top level of the user's module. A script that registers
crews it defines itself needs ``if __name__ == "__main__":`` around the run, because the
crew's process imports the script to find them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the binary is looked up first; then ``live-crew`` on ``PATH``.
BINARY_ENV = "LIVE_CREW_BIN"


class LiveCrewError(Exception):
    """The host could not run: configuration or usage error, or no binary."""


@dataclass
class RunResult:
    """What a run produced: actions in output order, error records, the host's log."""

    actions: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    returncode: int
    log: str = field(repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class CrewOrchestrator:
    """Crews registered by name; ``run`` starts the host over an events file or list."""

    def __init__(
        self, config: str | os.PathLike[str] | None = None, llm: str | None = None
    ) -> None:
        """``config`` is a ``live-config.yaml``; ``llm`` overrides every crew's model
        (``"fake"`` for offline runs) unless a crew sets its own."""
        self._config = Path(config).resolve() if config is not None else None
        self._llm = llm
        self._crews: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], llm: str | None = None) -> CrewOrchestrator:
        return cls(config=path, llm=llm)

    def register_crew(
        self,
        name: str,
        crew: Any,
        triggers: Sequence[str],
        dependencies: Sequence[tuple[str, int]] = (),
        timeout_ms: int | None = None,
        wait_policy: str | None = None,
        llm: str | None = None,
        output: dict[str, str] | None = None,
        **runtime: Any,
    ) -> None:
        """Adds a crew. ``crew`` is a ``Crew``, a ``@CrewBase`` class or a factory;
        ``dependencies`` are ``(crew, offset)`` pairs; ``output`` is the runtime file's
        ``runner.output`` (``kind``, ``context_key``); any other runtime-file field
        (``context``, ``sandbox``, ``env``, ``env_passthrough``...) goes in ``runtime``."""
        if name in self._crews:
            raise LiveCrewError(f"crew '{name}' is registered already")
        module, attr, root = crew_reference(crew)
        runner: dict[str, Any] = {
            "kind": "crewai",
            "module": f"{module}:{attr}",
            "pythonpath": [root],
            "python": sys.executable,
        }
        if llm or self._llm:
            runner["llm"] = llm or self._llm
        if output:
            runner["output"] = output
        document: dict[str, Any] = {"crew": name, "triggers": list(triggers), **runtime}
        document["runner"] = runner
        if dependencies:
            document["needs"] = [
                {"type": "crew", "crew": other, "offset": offset} for other, offset in dependencies
            ]
        if timeout_ms is not None:
            document["timeout_ms"] = timeout_ms
        if wait_policy is not None:
            document["wait_policy"] = wait_policy
        self._crews[name] = document

    def write_crews(self, folder: str | os.PathLike[str]) -> Path:
        """Writes the crews folder (one sub-folder and runtime file per crew); returns it."""
        crews = Path(folder)
        for name, document in self._crews.items():
            (crews / name).mkdir(parents=True, exist_ok=True)
            # JSON is YAML: the host reads it as any runtime file.
            text = json.dumps(document, indent=2) + "\n"
            (crews / name / f"{name}.runtime.yaml").write_text(text, encoding="utf-8")
        return crews

    def run(self, events: str | os.PathLike[str] | list[dict[str, Any]]) -> RunResult:
        """Runs every registered crew over ``events`` (a JSON Lines or JSON array file,
        or a list of event dicts) until the input ends."""
        if not self._crews:
            raise LiveCrewError("no crews registered; call register_crew first")
        with tempfile.TemporaryDirectory(prefix="live-crew-api-") as scratch:
            work = Path(scratch)
            crews = self.write_crews(work / "crews")
            if isinstance(events, (str, os.PathLike)):
                events_file = Path(events)
            else:
                events_file = work / "events.jsonl"
                events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
            errors_file = work / "errors.jsonl"
            command = [
                find_binary(),
                "run",
                "--crews",
                str(crews),
                "--events",
                str(events_file),
                "--errors",
                str(errors_file),
            ]
            if self._config is not None:
                command += ["--config", str(self._config)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode not in (0, 1):
                raise LiveCrewError(f"live-crew exited with {done.returncode}:\n{done.stderr}")
            errors = _json_lines(errors_file.read_text()) if errors_file.exists() else []
        return RunResult(_json_lines(done.stdout), errors, done.returncode, done.stderr)

    async def arun(self, events: str | os.PathLike[str] | list[dict[str, Any]]) -> RunResult:
        """``run`` for async code: the host runs without blocking the event loop."""
        import asyncio

        return await asyncio.to_thread(self.run, events)


def find_binary() -> str:
    """``$LIVE_CREW_BIN``, else ``live-crew`` on ``PATH``."""
    binary = os.environ.get(BINARY_ENV) or shutil.which("live-crew")
    if not binary:
        raise LiveCrewError(
            f"the live-crew binary was not found; put it on PATH or set {BINARY_ENV}"
        )
    return binary


def crew_reference(crew: Any) -> tuple[str, str, str]:
    """``(module, attr, root)``: how the crew's process imports ``crew``, and the folder
    to put on its ``sys.path``."""
    name = getattr(crew, "__qualname__", None)
    module_name = getattr(crew, "__module__", None) if name else None
    if name and "<locals>" in name:
        raise LiveCrewError(
            f"{name} is defined inside a function; define it at the top level of a module"
        )
    if not (name and module_name):
        # An object (a Crew): find the module attribute that holds it.
        for candidate, module in list(sys.modules.items()):
            attrs = getattr(module, "__dict__", {})
            found = next((key for key, value in attrs.items() if value is crew), None)
            if found and getattr(module, "__file__", None):
                module_name, name = candidate, found
                if candidate != "__main__":
                    break
    module = sys.modules.get(module_name or "")
    path = getattr(module, "__file__", None)
    if not (name and path):
        raise LiveCrewError(
            "the crew must be a Crew, a @CrewBase class or a function held by a module "
            "attribute, so that its own process can import it"
        )
    file = Path(path).resolve()
    if module_name == "__main__":
        module_name = file.stem
    depth = module_name.count(".") + (file.name == "__init__.py")
    root = file.parent
    for _ in range(depth):
        root = root.parent
    return module_name, name, str(root)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
