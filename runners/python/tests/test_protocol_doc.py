"""docs/PROTOCOL.md's examples work as printed: the minimal runner and the shell session."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from conftest import PYTHON, RUNNERS_PYTHON, event

PROTOCOL_MD = RUNNERS_PYTHON.parents[1] / "docs" / "PROTOCOL.md"


def code_block(after: str, language: str) -> str:
    text = PROTOCOL_MD.read_text()
    start = text.index(f"```{language}\n", text.index(after)) + len(language) + 4
    return text[start : text.index("```\n", start)]


def test_minimal_runner_speaks_the_protocol(spawn, tmp_path):
    script = tmp_path / "echo_runner.py"
    script.write_text(code_block("<!-- example-runner", "python"))
    runner = spawn(tmp_path, [PYTHON, str(script)])
    assert runner.hello({"runner": {"kind": "command"}}, heartbeat_ms=50)["type"] == "ready"
    reply = runner.call(1, [event("goal", {"team": "home"})])
    assert reply == {
        "type": "result",
        "id": 1,
        "actions": [{"kind": "echo", "payload": {"team": "home"}}],
    }
    assert runner.call(2, [{"no": "payload"}])["type"] == "error"
    assert runner.recv(heartbeats=True) == {"type": "heartbeat"}
    runner.send({"type": "shutdown"})
    assert runner.wait() == 0


def test_shell_session_prints_what_the_doc_shows(tmp_path):
    session = code_block("### A session by hand", "console")
    handlers = re.search(r"<<'EOF'\n(.*?)\nEOF\n", session, re.S)
    assert handlers is not None
    crew_dir = tmp_path / "scorer"
    crew_dir.mkdir()
    (crew_dir / "handlers.py").write_text(handlers.group(1) + "\n")
    sent = re.findall(r"^  '(\{.*\})' \\$", session, re.M)
    printed = [line for line in session.splitlines() if line.startswith('{"type"')]
    assert len(sent) == 4 and len(printed) == 3
    stdin = "".join(line.replace("/tmp/demo/scorer", str(crew_dir)) + "\n" for line in sent)
    result = subprocess.run(
        [PYTHON, "-m", "live_crew_runner"],
        input=stdin.encode(),
        capture_output=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(RUNNERS_PYTHON), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=30,
    )
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == printed
    assert json.loads(printed[2])["type"] == "error" and b"KeyError: 'team'" in result.stderr
    assert str(Path(crew_dir)) in result.stderr.decode(), "the traceback, with paths, is on stderr"
