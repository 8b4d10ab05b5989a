"""The Python API end to end: the real live-crew binary ($LIVE_CREW_BIN) runs CrewAI
crews registered in Python, each in its own sandboxed runner process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("crewai", reason="the Python API runs CrewAI crews")

from conftest import FIXTURES, RUNNERS_PYTHON, event  # noqa: E402
from live_crew import CrewOrchestrator, LiveCrewError  # noqa: E402
from live_crew.orchestrator import crew_reference  # noqa: E402

EXAMPLE = RUNNERS_PYTHON.parents[1] / "examples" / "hello_crewai"
needs_binary = pytest.mark.skipif(
    not os.environ.get("LIVE_CREW_BIN"), reason="set LIVE_CREW_BIN (scripts/test.sh does)"
)


@pytest.fixture
def hello_crews(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "python"))
    import hello_crews

    return hello_crews


def test_crews_are_referenced_by_module_path(hello_crews, monkeypatch: pytest.MonkeyPatch):
    root = str(EXAMPLE / "python")
    assert crew_reference(hello_crews.greeter) == ("hello_crews", "greeter", root)
    hello_crews.ready_made = hello_crews.greeter()  # a Crew object held by the module
    assert crew_reference(hello_crews.ready_made) == ("hello_crews", "ready_made", root)

    monkeypatch.syspath_prepend(str(FIXTURES / "crewai_class"))
    from class_crew import ReportCrew  # a @CrewBase class

    assert crew_reference(ReportCrew) == ("class_crew", "ReportCrew", str(FIXTURES / "crewai_class"))

    def local_factory():
        return None

    with pytest.raises(LiveCrewError, match="inside a function"):
        crew_reference(local_factory)
    with pytest.raises(LiveCrewError, match="held by a module attribute"):
        crew_reference(hello_crews.shouter())  # an object nobody holds


def test_runtime_files_carry_triggers_needs_and_runner(tmp_path: Path, hello_crews):
    orchestrator = CrewOrchestrator(llm="fake")
    orchestrator.register_crew(
        "shouter",
        hello_crews.shouter,
        triggers=["hello"],
        dependencies=[("greeter", 0)],
        timeout_ms=5000,
        wait_policy="any",
        context={"read": [], "write": []},
    )
    with pytest.raises(LiveCrewError, match="registered already"):
        orchestrator.register_crew("shouter", hello_crews.shouter, triggers=["hello"])
    import json

    crews = orchestrator.write_crews(tmp_path)
    document = json.loads((crews / "shouter" / "shouter.runtime.yaml").read_text())
    assert document["needs"] == [{"type": "crew", "crew": "greeter", "offset": 0}]
    assert document["runner"]["module"] == "hello_crews:shouter"
    assert document["runner"]["llm"] == "fake"
    assert (document["timeout_ms"], document["wait_policy"]) == (5000, "any")
    assert document["context"] == {"read": [], "write": []}


@needs_binary
def test_run_and_arun_drive_the_binary_over_registered_crews(hello_crews):
    orchestrator = CrewOrchestrator(llm="fake")
    orchestrator.register_crew("greeter", hello_crews.greeter, triggers=["hello"])
    orchestrator.register_crew(
        "shouter", hello_crews.shouter, triggers=["hello"], dependencies=[("greeter", 0)]
    )
    events = [event("hello", {"name": "Ada"}), event("other", {})]
    result = orchestrator.run(events)
    assert result.ok, result.log
    assert [(a["crew"], a["kind"]) for a in result.actions] == [
        ("greeter", "greeter_output"),
        ("shouter", "shouter_output"),
    ]
    assert result.actions[0]["payload"]["raw"].endswith("Greet Ada warmly.")
    again = asyncio.run(orchestrator.arun(events))
    assert again.actions == result.actions


@needs_binary
def test_a_failing_crew_is_an_error_record_not_an_exception(hello_crews):
    orchestrator = CrewOrchestrator(llm="fake")
    orchestrator.register_crew("greeter", hello_crews.greeter, triggers=["hello"])
    result = orchestrator.run([event("hello", {"nobody": "here"})])  # no {name}
    assert result.returncode == 1 and result.actions == []
    assert result.errors[0]["reason"] == "runner_error"
    assert "'{name}'" in result.errors[0]["message"]


@needs_binary
def test_the_hello_world_script_runs():
    env = {**os.environ, "PYTHONPATH": str(RUNNERS_PYTHON)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "python" / "hello.py")],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["0", "greeter"], ["0", "shouter"], ["1", "greeter"], ["1", "shouter"]
    ]
    assert lines[2].endswith("Greet Grace warmly.")
    assert len((EXAMPLE / "python" / "hello.py").read_text().splitlines()) <= 10
