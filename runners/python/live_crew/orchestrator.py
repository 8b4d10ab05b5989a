"""``CrewOrchestrator``: register CrewAI crews in Python, run them with the live-crew host.

A thin front (SPEC §11): ``run`` writes one runtime file per registered crew into a
private crews folder and runs the ``live-crew`` binary on it. Every crew still runs in
its own sandboxed process, which imports the crew by its module path (``module:attr``),
so a crew must be reachable from a module: a ``Crew`` object or a ``@CrewBase`` class or
factory function defined at the top level of the user's module. A script that registers
crews it defines itself needs ``if __name__ == "__main__":`` around the run, because the
crew's process imports the script to find them.

The machinery below the class (the binary, the private crews folder, the run) is shared
with the seed prototype's ``Orchestrator`` (``handlers.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the binary is looked up first; then ``live-crew`` on ``PATH``.
BINARY_ENV = "LIVE_CREW_BIN"

#: What a run reads: a JSON Lines or JSON array file, or a list of event dicts.
Events = str | os.PathLike[str] | list[dict[str, Any]]


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

    @property
    def summary(self) -> dict[str, int]:
        """The host's end-of-run counts (SPEC §8): ``events`` (valid ones), ``slices``
        (that held an event, over all streams), ``actions`` and ``errors``."""
        # The last log line, in JSON (run_host asks for it).
        for line in reversed(self.log.splitlines()):
            if line.startswith('{"ts":') and '"msg":"live-crew: ' in line:
                record = json.loads(line)
                if "slices" in record:
                    return {key: record[key] for key in ("events", "slices", "actions", "errors")}
        raise LiveCrewError("the host's log holds no run summary")


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
        for document in self._crews.values():
            write_runtime(folder, document)
        return Path(folder)

    def run(self, events: Events) -> RunResult:
        """Runs every registered crew over ``events`` (a JSON Lines or JSON array file,
        or a list of event dicts) until the input ends."""
        if not self._crews:
            raise LiveCrewError("no crews registered; call register_crew first")
        return run_host(self.write_crews, events, self._config)

    async def arun(self, events: Events) -> RunResult:
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


def write_runtime(crews: str | os.PathLike[str], document: dict[str, Any]) -> Path:
    """Writes ``document`` as the runtime file of a new crew in ``crews``; returns the
    crew's folder, where the caller may put the crew's other files."""
    name: str = document["crew"]
    folder = Path(crews) / name
    folder.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: the host reads it as any runtime file.
    text = json.dumps(document, indent=2) + "\n"
    (folder / f"{name}.runtime.yaml").write_text(text, encoding="utf-8")
    return folder


def run_host(
    write_crews: Callable[[Path], object], events: Events, config: Path | None
) -> RunResult:
    """Runs the ``live-crew`` binary until the input ends, on a private crews folder
    that ``write_crews`` fills, over ``events``, with the ``config`` file if any."""
    with tempfile.TemporaryDirectory(prefix="live-crew-api-") as scratch:
        work = Path(scratch)
        crews = work / "crews"
        write_crews(crews)
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
            # JSON lines whatever the config says, so that the summary can be read.
            "--log-format",
            "json",
        ]
        if config is not None:
            command += ["--config", str(config)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode not in (0, 1):
            raise LiveCrewError(f"live-crew exited with {done.returncode}:\n{done.stderr}")
        errors = _json_lines(errors_file.read_text()) if errors_file.exists() else []
    return RunResult(_json_lines(done.stdout), errors, done.returncode, done.stderr)


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
