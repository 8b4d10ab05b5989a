"""Drives runners as real subprocesses over pipes, the way the host does."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

RUNNERS_PYTHON = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# The host uses runner.python, else $LIVE_CREW_PYTHON, else python3; tests default to the
# interpreter running them, which has no packages the runner could lean on by accident.
PYTHON = os.environ.get("LIVE_CREW_PYTHON") or sys.executable
TIMEOUT_S = 10.0

Message = dict[str, Any]


def runner_env(workdir: Path, crew_dir: Path) -> dict[str, str]:
    """The environment the host gives a runner."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "PYTHONPATH": str(RUNNERS_PYTHON),
        "PYTHONDONTWRITEBYTECODE": "1",  # keep the fixture folders clean
        "LIVE_CREW_CREW_DIR": str(crew_dir),
    }


class RunnerPipes:
    """The host's ends of a runner's stdin, stdout and stderr; stdout and stderr drain in
    threads."""

    def __init__(self, stdin: BinaryIO, stdout: BinaryIO, stderr: BinaryIO, crew_dir: Path) -> None:
        self.crew_dir = crew_dir
        self.stdin, self.stdout, self.stderr_pipe = stdin, stdout, stderr
        self.stdout_lines: list[bytes] = []  # every line, heartbeats included
        self._replies: queue.Queue[bytes | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._drains = [
            threading.Thread(target=self._drain_stdout, daemon=True),
            threading.Thread(target=self._drain_stderr, daemon=True),
        ]
        for drain in self._drains:
            drain.start()

    def _drain_stdout(self) -> None:
        for line in self.stdout:
            self.stdout_lines.append(line)
            self._replies.put(line)
        self._replies.put(None)

    def _drain_stderr(self) -> None:
        for line in self.stderr_pipe:
            self._stderr.append(line)

    def send(self, message: Message) -> None:
        self.send_raw(json.dumps(message).encode() + b"\n")

    def send_raw(self, data: bytes) -> None:
        self.stdin.write(data)
        self.stdin.flush()

    def close_stdin(self) -> None:
        self.stdin.close()

    def recv(self, timeout: float = TIMEOUT_S, heartbeats: bool = False) -> Message:
        """The next message, skipping heartbeats unless asked for them."""
        while True:
            try:
                line = self._replies.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no message within {timeout}s; stderr:\n{self.stderr}"
                ) from None
            if line is None:
                raise AssertionError(f"runner closed stdout; stderr:\n{self.stderr}")
            assert line.endswith(b"\n")
            message = json.loads(line)
            if heartbeats or message != {"type": "heartbeat"}:
                return message

    def hello(
        self,
        config: Message,
        heartbeat_ms: int = 60_000,
        crew: str | None = None,
        timeout: float = TIMEOUT_S,
    ) -> Message:
        self.send(
            {
                "type": "hello",
                "protocol": 1,
                "crew": crew or self.crew_dir.name,
                "crew_dir": str(self.crew_dir),
                "config": config,
                "heartbeat_ms": heartbeat_ms,
            }
        )
        return self.recv(timeout)

    def call(
        self,
        call_id: int,
        events: list[Message] | None = None,
        context: Message | None = None,
        deps: Message | None = None,
    ) -> Message:
        """Sends a call and returns its reply."""
        self.send(call_message(call_id, events or [], context or {}, deps or {}))
        return self.recv()

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def wait_for_stderr(self, *texts: str, timeout: float = TIMEOUT_S) -> str:
        """stderr once it holds all ``texts``: it drains in its own thread, so what the
        runner wrote there before a reply may not have been read yet when the reply is."""
        deadline = time.monotonic() + timeout
        while not all(text in self.stderr for text in texts) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.stderr

    def join_drains(self, timeout: float = TIMEOUT_S) -> None:
        for drain in self._drains:
            drain.join(timeout)

    def close(self) -> None:
        for pipe in (self.stdin, self.stdout, self.stderr_pipe):
            pipe.close()


class RunnerProcess(RunnerPipes):
    """One runner child with the host's environment."""

    def __init__(self, argv: list[str], workdir: Path, crew_dir: Path) -> None:
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=runner_env(workdir, crew_dir),
            start_new_session=True,
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        super().__init__(self.proc.stdin, self.proc.stdout, self.proc.stderr, crew_dir)

    def wait(self, timeout: float = TIMEOUT_S) -> int:
        code = self.proc.wait(timeout)
        self.join_drains(timeout)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close()


def event(kind: str, payload: Any, ts: str = "2025-01-01T00:00:00.250000Z") -> Message:
    return {"ts": ts, "kind": kind, "stream_id": "match1", "payload": payload}


def call_message(call_id: int, events: list[Message], context: Message, deps: Message) -> Message:
    return {
        "type": "call",
        "id": call_id,
        "call_id": f"match1:0:crew-{call_id}",
        "stream_id": "match1",
        "slice": 0,
        "slice_start": "2025-01-01T00:00:00.000000Z",
        "slice_end": "2025-01-01T00:00:00.500000Z",
        "events": events,
        "context": context,
        "deps": deps,
        "deadline_ms": 30_000,
    }


def python_config(crew: str, module: str) -> Message:
    """The JSON form of a `python` crew's runtime.yaml."""
    return {"crew": crew, "triggers": ["*"], "runner": {"kind": "python", "module": module}}


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """spawn(crew_dir, argv=None) starts a runner; every runner is killed after the test."""
    started: list[RunnerProcess] = []

    def start(crew_dir: Path, argv: list[str] | None = None) -> RunnerProcess:
        workdir = tmp_path / f"work{len(started)}"
        workdir.mkdir()
        runner = RunnerProcess(argv or [PYTHON, "-m", "live_crew_runner"], workdir, crew_dir)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.stop()


@pytest.fixture
def python_crew(spawn: Any) -> Any:
    """python_crew(fixture, module) starts the runner on a fixture crew and shakes hands."""

    def start(fixture: str, module: str, heartbeat_ms: int = 60_000) -> RunnerProcess:
        runner: RunnerProcess = spawn(FIXTURES / fixture)
        ready = runner.hello(python_config(fixture, module), heartbeat_ms)
        assert ready["type"] == "ready", ready
        return runner

    return start
