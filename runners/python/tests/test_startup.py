"""Startup stays cheap: the runner imports nothing heavy before `ready`."""

from __future__ import annotations

import json
import subprocess

from conftest import FIXTURES, PYTHON, RUNNERS_PYTHON, event, python_config

ENTRY = "from live_crew_runner.serve import main; main()"
# Imports that cost milliseconds each; crews that want them import them themselves.
HEAVY = {"json", "re", "typing", "dataclasses", "inspect", "threading", "traceback", "runpy"}


def test_startup_path_imports_nothing_heavy():
    probe = (
        "import sys; before = set(sys.modules)\n"
        "import live_crew_runner.serve, live_crew_runner.kinds.python\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", probe],
        capture_output=True,
        env={"PYTHONPATH": str(RUNNERS_PYTHON), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=30,
        check=True,
    )
    imported = set(json.loads(result.stdout.decode().replace("'", '"')))
    assert not imported & HEAVY, sorted(imported & HEAVY)


def test_the_c_entry_runs_the_same_runner(spawn):
    runner = spawn(FIXTURES / "echo", [PYTHON, "-c", ENTRY])
    assert runner.hello(python_config("echo", "handlers"))["type"] == "ready"
    assert runner.call(1, [event("goal", 1)])["actions"] == [{"kind": "echo", "payload": 1}]
    runner.send({"type": "shutdown"})
    assert runner.wait() == 0
