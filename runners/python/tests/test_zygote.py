"""The zygote end to end: a real fork server on a SOCK_SEQPACKET socket, driven as the host
drives it, forking real crews that speak the runner protocol on real pipes."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    FIXTURES,
    PYTHON,
    RUNNERS_PYTHON,
    TIMEOUT_S,
    RunnerPipes,
    call_message,
    event,
    python_config,
    runner_env,
)

ENTRY = "from live_crew_runner.zygote import main; main()"
RUNNER_ENTRY = "from live_crew_runner.serve import main; main()"
#: Whether the interpreter the zygote runs with has CrewAI.
CREWAI_PROBE = "import importlib.util, sys; sys.exit(importlib.util.find_spec('crewai') is None)"
HAS_CREWAI = subprocess.run([PYTHON, "-c", CREWAI_PROBE]).returncode == 0
ROOT = os.geteuid() == 0
#: A seccomp filter of one instruction, BPF_RET|BPF_K SECCOMP_RET_ALLOW, as the host sends it.
ALLOW_ALL = struct.pack("=HBBI", 0x06, 0, 0, 0x7FFF0000).hex()
#: Enough time for the zygote to import CrewAI on a busy 2-core machine.
PRELOAD_TIMEOUT_S = 120.0

Message = dict[str, Any]


class Zygote:
    """A zygote child with the host's side of its socket; what it sends is read in a thread."""

    def __init__(self, home: Path, preload_crewai: bool, pythonpath: list[Path]) -> None:
        self.home = home
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(home),
            "TMPDIR": str(home),
            "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, RUNNERS_PYTHON])),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        argv = [PYTHON, "-c", ENTRY, *(["--preload", "crewai"] if preload_crewai else [])]
        self.proc = subprocess.Popen(
            argv,
            stdin=theirs,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=home,
            env=env,
            start_new_session=True,
        )
        theirs.close()
        self._inbox: queue.Queue[tuple[Message, list[int]] | None] = queue.Queue()
        self._held: list[tuple[Message, list[int]]] = []
        self._stderr: list[bytes] = []
        self._next_id = 1
        self.crews: list[RunnerPipes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        timeout = PRELOAD_TIMEOUT_S if preload_crewai else TIMEOUT_S
        self.ready, _ = self.expect(lambda message: message["type"] == "ready", timeout)

    def _read(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 1 << 20, 8)
            except OSError:
                break
            if not data:
                break
            self._inbox.put((json.loads(data), fds))
        self._inbox.put(None)

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def expect(
        self, wanted: Callable[[Message], bool], timeout: float = TIMEOUT_S
    ) -> tuple[Message, list[int]]:
        """The first message that is ``wanted``; others are kept for later calls."""
        for held in self._held:
            if wanted(held[0]):
                self._held.remove(held)
                return held
        while True:
            try:
                received = self._inbox.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no such message in {timeout}s; stderr:\n{self.stderr}"
                ) from None
            if received is None:
                raise AssertionError(f"the zygote closed its socket; stderr:\n{self.stderr}")
            if wanted(received[0]):
                return received
            self._held.append(received)

    def exited(self, pid: int) -> int:
        """The raw wait status the zygote reports for ``pid``."""
        message, _ = self.expect(lambda m: m["type"] == "exited" and m["pid"] == pid)
        return int(message["status"])

    def send(self, data: bytes, fds: list[int] | None = None) -> None:
        socket.send_fds(self.sock, [data], fds or [])

    def request(
        self, crew_dir: Path, workdir: Path, env: list[list[str]] | None = None, **plan: Any
    ) -> tuple[Message, list[int], RunnerPipes]:
        """Sends a spawn request with fresh pipes; the reply, its fds and the crew's pipes."""
        request_id = self._next_id
        self._next_id += 1
        stdin, host_stdin = os.pipe()
        host_stdout, stdout = os.pipe()
        host_stderr, stderr = os.pipe()
        env_read, env_write = os.pipe()
        if env is None:
            env = [[name, value] for name, value in runner_env(workdir, crew_dir).items()]
        os.write(env_write, json.dumps(env).encode())
        os.close(env_write)
        message = {
            "type": "spawn",
            "id": request_id,
            "crew": crew_dir.name,
            "workdir": str(workdir),
            "netns": False,
            "pid_namespace": False,
            "rlimits": [["RLIMIT_CORE", 0, 0]],
            "user": None,
            "landlock": False,
            "seccomp": [],
            **plan,
        }
        self.send(json.dumps(message).encode(), [stdin, stdout, stderr, env_read])
        for fd in (stdin, stdout, stderr, env_read):
            os.close(fd)
        crew = RunnerPipes(  # which closes them
            open(host_stdin, "wb"),  # noqa: SIM115
            open(host_stdout, "rb"),  # noqa: SIM115
            open(host_stderr, "rb"),  # noqa: SIM115
            crew_dir,
        )
        self.crews.append(crew)
        reply, fds = self.expect(lambda m: m.get("id") == request_id)
        return reply, fds, crew

    def spawn(
        self, crew_dir: Path, workdir: Path | None = None, **plan: Any
    ) -> tuple[int, int, RunnerPipes]:
        """A crew that answered ``hello``: its pid, its pidfd and its pipes."""
        workdir = workdir or Path(tempfile.mkdtemp(dir=self.home))
        reply, fds, crew = self.request(crew_dir, workdir, **plan)
        assert reply == {"type": "spawned", "id": reply["id"], "pid": reply["pid"]}, reply
        assert len(fds) == 1, fds
        ready = crew.hello(python_config(crew_dir.name, "handlers"))
        assert ready["type"] == "ready", ready
        return reply["pid"], fds[0], crew

    def stop(self) -> None:
        # shutdown, not only close: the reader thread's recv holds the socket open.
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        try:
            self.proc.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for crew in self.crews:
            crew.close()


@pytest.fixture
def start_zygote(tmp_path: Path) -> Iterator[Callable[..., Zygote]]:
    """start_zygote(preload_crewai=False, pythonpath=()) starts a zygote, with ``pythonpath``
    ahead of the runner; each is stopped after the test, and its crews die with it."""
    started: list[Zygote] = []

    def start(preload_crewai: bool = False, pythonpath: tuple[Path, ...] = ()) -> Zygote:
        home = tmp_path / f"zygote{len(started)}"
        home.mkdir()
        started.append(Zygote(home, preload_crewai, list(pythonpath)))
        return started[-1]

    yield start
    for zygote in started:
        zygote.stop()


@pytest.fixture
def zygote(start_zygote: Callable[..., Zygote]) -> Zygote:
    return start_zygote()


def identity(crew: RunnerPipes) -> Message:
    """What the ``identity`` fixture crew reports about its process."""
    reply = crew.call(1)
    assert reply["type"] == "result", reply
    return reply["actions"][0]["payload"]


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines)


def test_ready_names_the_zygote_and_its_import_time(zygote):
    assert zygote.ready == {
        "type": "ready",
        "pid": zygote.proc.pid,
        "import_s": zygote.ready["import_s"],
    }
    assert isinstance(zygote.ready["import_s"], float)


def test_a_forked_crew_answers_hello_and_calls(zygote):
    pid, pidfd, crew = zygote.spawn(FIXTURES / "echo")
    # The pidfd is the crew's.
    assert f"Pid:\t{pid}\n" in Path(f"/proc/self/fdinfo/{pidfd}").read_text()
    assert crew.call(1, [event("goal", 1)]) == {
        "type": "result",
        "id": 1,
        "actions": [{"kind": "echo", "payload": 1}],
    }
    crew.close_stdin()
    assert os.waitstatus_to_exitcode(zygote.exited(pid)) == 0
    os.close(pidfd)


def test_a_forked_crew_gets_exactly_its_plan_and_a_cold_starts_sandbox(zygote, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    pid, pidfd, _ = zygote.spawn(FIXTURES / "identity", workdir)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")[:-1]
    expected = runner_env(workdir, FIXTURES / "identity")
    assert [entry.decode() for entry in environ] == [f"{k}={v}" for k, v in expected.items()]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [part.decode() for part in cmdline[1:]] == ["-c", RUNNER_ENTRY]
    assert os.readlink(f"/proc/{pid}/cwd") == str(workdir)
    assert os.getsid(pid) == pid, "a session of its own"
    status = status_fields(pid)
    assert int(status["PPid"]) == zygote.proc.pid
    for capabilities in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[capabilities], 16) == 0, capabilities
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "0"
    limits = Path(f"/proc/{pid}/limits").read_text()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    assert core.split()[-3:] == ["0", "0", "bytes"]
    # What a cold start has open: stdin, stdout, stderr and the protocol's private copies
    # (Channel.take_stdio); none of the zygote's fds.
    assert sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd")) == [0, 1, 2, 3, 4]
    os.close(pidfd)


def test_forked_crews_draw_different_random_numbers(zygote):
    payloads = [identity(zygote.spawn(FIXTURES / "identity")[2]) for _ in range(2)]
    first, second = payloads
    assert first["pid"] != second["pid"]
    assert first["random"] != second["random"]
    assert first["urandom"] != second["urandom"]


def test_a_killed_crew_is_reported_with_its_signal(zygote):
    pid, pidfd, _ = zygote.spawn(FIXTURES / "echo")
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    status = zygote.exited(pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    os.close(pidfd)


def test_crews_die_with_the_zygote(zygote):
    _, pidfd, _ = zygote.spawn(FIXTURES / "echo")
    zygote.proc.kill()
    # A pidfd turns readable when its process exits.
    readable, _, _ = select.select([pidfd], [], [], TIMEOUT_S)
    assert readable == [pidfd]
    os.close(pidfd)


def test_what_it_cannot_use_is_refused_and_it_goes_on(zygote, tmp_path):
    reader, writer = os.pipe()
    zygote.send(b"not json", [writer])
    zygote.send(json.dumps({"type": "bogus"}).encode())
    os.close(writer)
    # The zygote closed the fds that came with the message it dropped.
    readable, _, _ = select.select([reader], [], [], TIMEOUT_S)
    assert readable == [reader] and os.read(reader, 1) == b""
    os.close(reader)

    reply, fds, _ = zygote.request(FIXTURES / "echo", tmp_path, rlimits=[["RLIMIT_NONE", 1, 1]])
    assert reply["type"] == "refused" and "rlimit" in reply["reason"], reply
    assert fds == []
    reply, _, _ = zygote.request(FIXTURES / "echo", tmp_path / "missing")
    assert reply["type"] == "refused" and "missing" in reply["reason"], reply
    reply, _, _ = zygote.request(FIXTURES / "echo", tmp_path, seccomp=["abc"])
    assert reply["type"] == "refused" and "seccomp" in reply["reason"], reply

    assert "not JSON" in zygote.stderr and "bogus" in zygote.stderr
    _, pidfd, crew = zygote.spawn(FIXTURES / "echo")
    assert crew.call(1, [event("goal", 2)])["actions"] == [{"kind": "echo", "payload": 2}]
    os.close(pidfd)


def test_a_crew_that_cannot_start_says_why_on_its_stderr(zygote, tmp_path):
    reply, fds, crew = zygote.request(FIXTURES / "echo", tmp_path, env=[["NOT", "A", "PAIR"]])
    assert reply["type"] == "spawned", reply
    assert os.waitstatus_to_exitcode(zygote.exited(reply["pid"])) == 1
    assert "cannot start crew 'echo'" in crew.wait_for_stderr("environment pipe")
    os.close(fds[0])


def test_seccomp_filters_are_installed(zygote):
    pid, pidfd, crew = zygote.spawn(FIXTURES / "echo", seccomp=[ALLOW_ALL, ALLOW_ALL])
    status = status_fields(pid)
    assert (status["Seccomp"], status["Seccomp_filters"]) == ("2", "2")
    assert crew.call(1, [event("goal", 3)])["actions"] == [{"kind": "echo", "payload": 3}]
    os.close(pidfd)


@pytest.mark.skipif(not ROOT, reason="a new pid namespace needs CAP_SYS_ADMIN")
def test_a_crew_in_its_own_pid_namespace_is_its_pid_1(zygote):
    pid, pidfd, crew = zygote.spawn(FIXTURES / "identity", pid_namespace=True)
    assert identity(crew)["pid"] == 1
    assert status_fields(pid)["NSpid"].split() == [str(pid), "1"]
    # The zygote went back to its own namespace: the next crew shares it.
    other, other_pidfd, _ = zygote.spawn(FIXTURES / "identity")
    zygote_ns = os.readlink(f"/proc/{zygote.proc.pid}/ns/pid")
    assert os.readlink(f"/proc/{other}/ns/pid") == zygote_ns
    assert os.readlink(f"/proc/{pid}/ns/pid") != zygote_ns
    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    assert os.WTERMSIG(zygote.exited(pid)) == signal.SIGKILL
    os.close(pidfd)
    os.close(other_pidfd)


@pytest.mark.skipif(not ROOT, reason="changing user needs root")
def test_a_crew_runs_as_its_user(zygote):
    # A folder the crew's user may enter; the crew imports nothing new from /root.
    workdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="live-crew-zygote-"))
    try:
        workdir.chmod(0o755)
        pid, pidfd, crew = zygote.spawn(
            FIXTURES / "identity", workdir, user={"uid": 65534, "gid": 65534}
        )
        payload = identity(crew)
        assert (payload["uid"], payload["gid"]) == (65534, 65534)
        assert status_fields(pid)["Groups"].strip() == ""
        os.close(pidfd)
    finally:
        workdir.rmdir()


@pytest.mark.skipif(not HAS_CREWAI, reason="preloading needs the crewai package")
def test_a_preloaded_crewai_serves_crews_as_a_cold_start_does(start_zygote, spawn, tmp_path):
    zygote = start_zygote(preload_crewai=True)
    assert "preload_error" not in zygote.ready, zygote.ready
    # CrewAI left no thread behind that a fork would lose.
    assert os.listdir(f"/proc/{zygote.proc.pid}/task") == [str(zygote.proc.pid)]
    _, pidfd, crew = zygote.spawn(FIXTURES / "identity")
    assert identity(crew)["crewai_imported"] is True
    os.close(pidfd)

    # A CrewAI crew, forked and cold, with the offline LLM: the same answer.
    config = {"crew": "desk", "triggers": ["*"], "runner": {"kind": "crewai", "llm": "fake"}}
    goal = event("goal_scored", {"team": "home", "minute": 23})
    workdir = tmp_path / "desk"
    workdir.mkdir()
    reply, fds, forked = zygote.request(FIXTURES / "crewai_yaml", workdir)
    assert reply["type"] == "spawned", reply
    cold = spawn(FIXTURES / "crewai_yaml")
    answers = []
    for runner in (forked, cold):
        assert runner.hello(config, crew="desk", timeout=PRELOAD_TIMEOUT_S)["type"] == "ready"
        runner.send(call_message(1, [goal], {}, {}))
        answers.append(runner.recv(timeout=PRELOAD_TIMEOUT_S))
    assert answers[0]["type"] == "result", answers[0]
    assert answers[0] == answers[1]
    # CrewAI's files went to the crew's HOME, under its working folder's name.
    assert (workdir / ".local" / "share" / "desk").is_dir()
    assert not (zygote.home / ".local" / "share" / "desk").exists()
    os.close(fds[0])


def test_a_failed_preload_is_reported_and_crews_still_fork(start_zygote):
    zygote = start_zygote(preload_crewai=True, pythonpath=(FIXTURES / "broken_crewai",))
    assert "broken on purpose" in zygote.ready["preload_error"], zygote.ready
    _, pidfd, crew = zygote.spawn(FIXTURES / "echo")
    assert crew.call(1, [event("goal", 4)])["actions"] == [{"kind": "echo", "payload": 4}]
    os.close(pidfd)


RESET_PROBE = """
import json, os, random, sys, tempfile
import multiprocessing, numpy.random, openai.lib.bedrock, rich
from live_crew_runner.crewai_setup import import_crewai
import_crewai()
import crewai.project

tempfile.gettempdir()  # caches the old TMPDIR
before = {
    "stdout": id(sys.stdout),
    "random": random.getstate(),
    "numpy": numpy.random.get_state()[1].tolist(),
    "authkey": bytes(multiprocessing.current_process().authkey),
    "bedrock": openai.lib.bedrock._LEGACY_SIGNATURE_KEY,
}
new = sys.argv[1]
os.environ.update(
    HOME=new, TMPDIR=new, REDIS_URL="redis://new", HTTPS_PROXY="http://proxy.new",
    OPENAI_API_VERSION="new", AZURE_OPENAI_ENDPOINT="https://new",
)
del os.environ["OPENAI_API_TYPE"]
os.chdir(new)

from live_crew_runner.zygote import reset_inherited_state

reset_inherited_state()

import site, sysconfig
import crewai.rag.chromadb.config as chroma_config
import crewai.rag.chromadb.constants as chroma_constants
import crewai.skills.cache as skills
import crewai_core.lock_store as lock_store
import crewai_core.plus_api as plus_api
import crewai_core.settings as settings
import multiprocessing.process
from chromadb.telemetry.product import ProductTelemetryClient
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

print(json.dumps({
    "tempdir": tempfile.gettempdir(),
    "stdio": [s.fileno() for s in (sys.stdin, sys.stdout, sys.stderr)],
    "dunder_stdio": [sys.__stdin__ is sys.stdin, sys.__stdout__ is sys.stdout,
                     sys.__stderr__ is sys.stderr],
    "new_stdout": id(sys.stdout) != before["stdout"],
    "stderr": [sys.stderr.line_buffering, sys.stderr.errors],
    "random_reseeded": random.getstate() != before["random"],
    "numpy_reseeded": numpy.random.get_state()[1].tolist() != before["numpy"],
    "authkey_new": bytes(multiprocessing.current_process().authkey) != before["authkey"],
    "original_dir": multiprocessing.process.ORIGINAL_DIR,
    "bedrock_key_new": openai.lib.bedrock._LEGACY_SIGNATURE_KEY != before["bedrock"],
    "openai": [openai.api_version, openai.azure_endpoint, openai.api_type],
    "user_base": site.USER_BASE,
    "user_site": site.USER_SITE,
    "sysconfig_userbase": sysconfig.get_config_var("userbase"),
    "rich_cwd": rich._IMPORT_CWD,
    "settings": str(settings.DEFAULT_CONFIG_PATH),
    "skills": str(skills._CACHE_ROOT),
    "chroma_storage": [chroma_constants.DEFAULT_STORAGE_PATH, chroma_config.DEFAULT_STORAGE_PATH],
    "redis": lock_store._REDIS_URL,
    "transport": plus_api._MACHINE_TRANSPORT_ENV,
    "chroma_user_id": ProductTelemetryClient.USER_ID_PATH,
    "onnx": str(ONNXMiniLM_L6_V2.DOWNLOAD_PATH),
}))
"""


@pytest.mark.skipif(not HAS_CREWAI, reason="the reset list is mostly CrewAI's")
def test_reset_inherited_state_recomputes_each_item_for_the_new_home(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    env = {
        **runner_env(old, FIXTURES / "echo"),
        "REDIS_URL": "redis://old",
        "HTTPS_PROXY": "http://proxy.old",
        "OPENAI_API_VERSION": "old",
        "OPENAI_API_TYPE": "openai",
        "OPENBLAS_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [PYTHON, "-c", RESET_PROBE, str(new)],
        capture_output=True,
        cwd=old,
        env=env,
        timeout=PRELOAD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr.decode()
    state = json.loads(result.stdout)
    userbase = f"{new}/.local"
    assert state == {
        "tempdir": str(new),
        "stdio": [0, 1, 2],
        "dunder_stdio": [True, True, True],
        "new_stdout": True,
        "stderr": [True, "backslashreplace"],
        "random_reseeded": True,
        "numpy_reseeded": True,
        "authkey_new": True,
        "original_dir": str(new),
        "bedrock_key_new": True,
        "openai": ["new", "https://new", None],
        "user_base": userbase,
        "user_site": state["user_site"],
        "sysconfig_userbase": userbase,
        "rich_cwd": str(new),
        "settings": f"{new}/.config/crewai/settings.json",
        "skills": f"{new}/.crewai/skills",
        "chroma_storage": [f"{new}/.local/share/new"] * 2,
        "redis": "redis://new",
        "transport": {"HTTPS_PROXY": "http://proxy.new"},
        "chroma_user_id": f"{new}/.cache/chroma/telemetry_user_id",
        "onnx": f"{new}/.cache/chroma/onnx_models/all-MiniLM-L6-v2",
    }
    assert state["user_site"].startswith(f"{userbase}/lib/python")


WARM_PROBE = """
import json, sys, threading
from live_crew_runner import zygote
error = zygote._preload(True)
from pydantic import BaseModel
from pydantic._internal import _fields, _generate_schema
incomplete = sorted(
    f"{name}.{value.__name__}"
    for name, module in list(sys.modules.items()) if name.split(".")[0] == "crewai"
    for value in list(vars(module).values())
    if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == name
    and value.__dict__.get("__pydantic_complete__") is False
)
ask = _fields.takes_validated_data_argument
print(json.dumps({
    "error": error,
    "lazy_imported": [m for m in zygote._CREWAI_LAZY_MODULES if m not in sys.modules],
    "incomplete": incomplete,
    "threads": threading.active_count(),
    "same_function": ask is _generate_schema.takes_validated_data_argument,
    "asked_from": ask.__module__,
    "answers": [ask(list), ask(dict), ask(lambda data: data), ask(lambda: 1), ask(dict.fromkeys)],
}))
"""


@pytest.mark.skipif(not HAS_CREWAI, reason="preloading needs the crewai package")
def test_the_crewai_preload_does_ahead_what_every_crews_first_kickoff_would():
    env = {"PYTHONPATH": str(RUNNERS_PYTHON), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([PYTHON, "-c", WARM_PROBE], env=env, capture_output=True, text=True,
                         timeout=PRELOAD_TIMEOUT_S)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["error"] is None
    assert found["lazy_imported"] == [], "each lazily imported module is imported"
    assert found["incomplete"] == [], "no CrewAI model is left for each crew to complete"
    assert found["threads"] == 1
    assert found["asked_from"] == "live_crew_runner.zygote"
    assert found["same_function"], "pydantic asks the remembered answers in both places"
    # The remembered answers for builtins, and pydantic's own for the rest.
    assert found["answers"] == [False, False, True, False, False]
