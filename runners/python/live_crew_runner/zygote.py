"""The zygote: a fork server that imports the runner (and CrewAI) once and forks each crew.

The host starts it as ``python3 -c "from live_crew_runner.zygote import main; main()"
[--preload crewai]``, as root with its capabilities (it gives each crew its namespaces)
and a minimal environment that holds no secrets. Its fd 0 is an ``AF_UNIX``
``SOCK_SEQPACKET`` socket to the host; fds 1 and 2 go to the host's log. Each message is
one JSON object; file descriptors travel with it as ``SCM_RIGHTS``:

- zygote → host, once its imports are done: ``{"type": "ready", "pid", "import_s"}``, plus
  ``"preload_error"`` when a preload failed (crews then import it themselves);
- host → zygote: ``{"type": "spawn", "id", "crew", "workdir", "netns", "pid_namespace",
  "rlimits", "user", "landlock", "seccomp"}`` with, in this order, the crew's stdin (read
  end), stdout and stderr (write ends), a pipe holding the crew's whole environment as
  JSON ``[[name, value], ...]``, the empty network namespace if ``netns`` and the Landlock
  ruleset if ``landlock``. Only the forked child reads the environment pipe, so a crew's
  secrets never pass through the zygote, whose memory every later crew starts as a copy of;
- zygote → host: ``{"type": "spawned", "id", "pid"}`` with the crew's pidfd attached, or
  ``{"type": "refused", "id", "reason"}`` when it could not fork the crew;
- zygote → host, whenever it reaps a crew: ``{"type": "exited", "pid", "status"}``, the
  raw wait status.

The child goes through the pre-exec sequence of ``sandbox/src/preexec.rs`` in the same
order (the host moves it into its cgroups itself), resets what modules captured at import
in the zygote's context (``reset_inherited_state``), then runs ``serve.main()`` as a cold
start would. The crews are the zygote's children and die with it (``PR_SET_PDEATHSIG``);
it exits when the host closes the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import json
import os
import random
import resource
import select
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from live_crew_runner.crewai_setup import _QUIET, import_crewai, print_traceback
from live_crew_runner.handler import CrewError, describe
from live_crew_runner.protocol import HostError, decode, dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn, TypeVar

    from live_crew_runner.protocol import Message

    T = TypeVar("T")

#: Set before anything is imported: CrewAI reads its opt-outs when its modules load, and
#: BLAS libraries start their thread pools then. A zygote must stay single-threaded, as
#: fork copies only the calling thread (and any lock another thread held).
_ZYGOTE_ENV = {
    **_QUIET,
    "PYTHON_DOTENV_DISABLED": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: Modules every crew of the bundled runner imports; CrewAI's come with ``--preload``.
_RUNNER_MODULES = (
    "live_crew_runner.serve",
    "live_crew_runner.handler",
    "live_crew_runner.kinds.python",
    "live_crew_runner.kinds.crewai",
    "live_crew_runner.kinds.prompt",
)

#: What a CrewAI crew's build (the gateway LLM, through ``crewai_setup``) and its first
#: kickoff would import lazily: imported here, their pages are shared, not copied into
#: every crew. A module a later CrewAI no longer has is left out.
_CREWAI_LAZY_MODULES = (
    "live_crew_runner.gateway_llm",
    "crewai.hooks.contexts",
    "crewai.llms.cache",
    "crewai.skills.tool",
)

#: The biggest message and the most fds a spawn request carries.
_MAX_MESSAGE = 1 << 20
_MAX_FDS = 8
#: stdin, stdout, stderr and the environment pipe come with every spawn request.
_FIXED_FDS = 4
#: A JSON limit at or above 2**63 means no limit (the host sends RLIM_INFINITY as u64).
_RLIM_INFINITY_FROM = 1 << 63
#: ``struct sock_filter`` is 8 bytes; the kernel takes at most BPF_MAXINSNS of them.
_SOCK_FILTER_SIZE = 8
_BPF_MAXINSNS = 4096
#: os.closerange's upper end: close_range(2) takes any number, so no fd escapes.
_FD_END = (1 << 31) - 1

# Linux constants (<linux/sched.h>, <linux/prctl.h>, <linux/capability.h>, <linux/seccomp.h>).
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_MM = 35
PR_SET_MM_MAP = 14
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
#: ``_LINUX_CAPABILITY_VERSION_3``: two 32-bit words per set.
LINUX_CAPABILITY_VERSION_3 = 0x20080522
#: The same number on every architecture (the Landlock calls came after the unification).
SYS_LANDLOCK_RESTRICT_SELF = 446
#: Fields of ``/proc/self/stat`` that ``struct prctl_mm_map`` takes, numbered as in
#: proc_pid_stat(5).
_STAT_FIELDS = {
    "start_code": 26,
    "end_code": 27,
    "start_stack": 28,
    "start_data": 45,
    "end_data": 46,
    "start_brk": 47,
}
#: What the host runs a crew with on a cold start (``src/supervisor/launch.rs``).
_RUNNER_ENTRY = "from live_crew_runner.serve import main; main()"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.sbrk.restype = ctypes.c_void_p
# Looked up here, once in the zygote, rather than on first use in every crew.
for _function in ("prctl", "capset", "setns", "unshare", "syscall"):
    getattr(_libc, _function)
#: prctl's unused arguments, as the unsigned longs the kernel reads (and checks are 0).
_ZEROS = (ctypes.c_ulong(0),) * 4


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


class _MmMap(ctypes.Structure):
    """``struct prctl_mm_map``."""

    _fields_ = (
        ("start_code", ctypes.c_uint64),
        ("end_code", ctypes.c_uint64),
        ("start_data", ctypes.c_uint64),
        ("end_data", ctypes.c_uint64),
        ("start_brk", ctypes.c_uint64),
        ("brk", ctypes.c_uint64),
        ("start_stack", ctypes.c_uint64),
        ("arg_start", ctypes.c_uint64),
        ("arg_end", ctypes.c_uint64),
        ("env_start", ctypes.c_uint64),
        ("env_end", ctypes.c_uint64),
        ("auxv", ctypes.c_void_p),
        ("auxv_size", ctypes.c_uint32),
        ("exe_fd", ctypes.c_uint32),
    )


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog``; ``filter`` points at the raw ``struct sock_filter`` array."""

    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_char_p))


class Plan:
    """A checked spawn request and the fds that came with it."""

    __slots__ = (
        "crew",
        "env_fd",
        "fds",
        "id",
        "landlock_fd",
        "netns_fd",
        "pid_namespace",
        "rlimits",
        "seccomp",
        "user",
        "workdir",
    )

    def __init__(self, message: Message, fds: list[int]) -> None:
        """Raises ValueError naming what is wrong with the request."""
        self.id: int = message["id"]
        self.fds = fds
        self.crew = _field(message, "crew", str)
        self.workdir = _field(message, "workdir", str)
        netns = _field(message, "netns", bool)
        landlock = _field(message, "landlock", bool)
        self.pid_namespace = _field(message, "pid_namespace", bool)
        expected = _FIXED_FDS + netns + landlock
        if len(fds) != expected:
            raise ValueError(f"the request came with {len(fds)} fds, not {expected}")
        self.env_fd = fds[3]
        self.netns_fd = fds[4] if netns else None
        self.landlock_fd = fds[-1] if landlock else None
        self.rlimits = [_rlimit(limit) for limit in _field(message, "rlimits", list)]
        user = message.get("user")
        if user is None:
            self.user = None
        elif isinstance(user, dict) and _is_uint(user.get("uid")) and _is_uint(user.get("gid")):
            self.user = (user["uid"], user["gid"])
        else:
            raise ValueError(f'\'user\' must be null or {{"uid": int, "gid": int}}, not {user!r}')
        self.seccomp = [_filter(text) for text in _field(message, "seccomp", list)]
        if not os.path.isdir(self.workdir):
            raise ValueError(f"the working folder {self.workdir} is not a folder")


def _field(message: Message, name: str, kind: type[T]) -> T:
    value = message.get(name)
    if type(value) is not kind:
        raise ValueError(f"'{name}' must be a {kind.__name__}, not {value!r:.80}")
    return value  # type: ignore[no-any-return]


def _is_uint(value: object) -> bool:
    return type(value) is int and value >= 0


def _rlimit(limit: object) -> tuple[int, int, int]:
    """``["RLIMIT_CORE", soft, hard]`` as setrlimit's arguments."""
    if (
        not isinstance(limit, list)
        or len(limit) != 3
        or not isinstance(limit[0], str)
        or not limit[0].startswith("RLIMIT_")
        or not hasattr(resource, limit[0])
        or not all(_is_uint(value) for value in limit[1:])
    ):
        raise ValueError(f'an rlimit must be ["RLIMIT_...", soft, hard], not {limit!r:.80}')
    name, soft, hard = limit
    return getattr(resource, name), _rlim(soft), _rlim(hard)


def _rlim(number: int) -> int:
    return resource.RLIM_INFINITY if number >= _RLIM_INFINITY_FROM else number


def _filter(text: object) -> bytes:
    """A seccomp filter from its hex: the raw bytes of its ``struct sock_filter`` array."""
    try:
        program = bytes.fromhex(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"a seccomp filter must be hex text, not {text!r:.80}") from None
    count, rest = divmod(len(program), _SOCK_FILTER_SIZE)
    if rest or not 0 < count <= _BPF_MAXINSNS:
        raise ValueError(f"a seccomp filter of {len(program)} bytes is no sock_filter array")
    return program


def main() -> NoReturn:
    faulthandler.enable()  # a crash in C code still leaves a traceback in the host log
    preload_crewai = _parse_args(sys.argv[1:])
    sock = socket.socket(fileno=0)
    started = time.monotonic()
    os.environ.update(_ZYGOTE_ENV)
    gc.disable()  # imports allocate millions of objects that all live on: no collections
    preload_error = _preload(preload_crewai)
    import_s = time.monotonic() - started
    gc.enable()
    # Out of the collector's reach, so collections in the crews never touch (and copy)
    # the pages the imports filled.
    gc.freeze()
    # The zygote's own pid namespace, to go back to after forking a crew into a new one.
    pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    global _proc_template
    _proc_template = _ProcTemplate()
    ready: Message = {"type": "ready", "pid": os.getpid(), "import_s": round(import_s, 3)}
    if preload_error is not None:
        ready["preload_error"] = preload_error
    try:
        _send(sock, ready)
        status = _serve(sock, pid_ns)
    except (BrokenPipeError, ConnectionResetError):
        status = 0  # the host went away; its crews die with this process
    sys.stderr.flush()
    os._exit(status)


def _parse_args(args: list[str]) -> bool:
    """Whether to preload CrewAI: ``--preload crewai`` is the only argument there is."""
    if args not in ([], ["--preload", "crewai"]):
        print(
            f"live-crew-zygote: unknown arguments {args!r}; the only one is '--preload crewai'",
            file=sys.stderr,
        )
        sys.stderr.flush()
        os._exit(2)
    return bool(args)


def _preload(crewai: bool) -> str | None:
    """Imports what crews would import; the error of a CrewAI preload that failed."""
    for name in _RUNNER_MODULES:
        __import__(name)
    # CPython sets its compiler up on the first compile, about 2 ms that every crew would
    # pay again to compile its own module (its folder is read-only: no bytecode cache).
    compile("pass", "<live-crew-zygote>", "exec")
    if not crewai:
        return None
    try:
        import_crewai()
        import crewai.project
        from crewai import Agent, Crew, Process, Task  # noqa: F401

        import live_crew_runner.fake_llm  # noqa: F401

        _warm_crewai()
    except CrewError as exc:
        return str(exc)
    except Exception as exc:
        print_traceback(exc)
        return f"cannot import crewai: {describe(exc)}"
    return None


def _warm_crewai() -> None:
    """Does here what each crew's first build and kickoff would do in its own copy of the
    zygote's pages. None of it builds a Crew, emits an event or starts a thread."""
    for name in _CREWAI_LAZY_MODULES:
        with contextlib.suppress(ImportError):
            __import__(name)
    from pydantic import BaseModel

    # Models CrewAI leaves incomplete at import (the agent execution events, the
    # delegation tools): pydantic would complete each on first use, in every crew.
    for name, module in list(sys.modules.items()):
        if name.split(".", 1)[0] != "crewai":
            continue
        for value in list(vars(module).values()):
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == name
                and value.__dict__.get("__pydantic_complete__") is False
            ):
                value.model_rebuild(raise_errors=False)
    _remember_builtin_factories()


def _remember_builtin_factories() -> None:
    """Answers pydantic's question about a builtin ``default_factory`` (``list``, ``dict``
    ...) from what it answered here. It asks for every such field of a model it defines,
    and CrewAI defines models in every kickoff; the answer goes through
    ``inspect.signature``, which for a builtin copies ``sys.modules`` and so writes the
    refcount of every module object: about 2 MB of the zygote's pages copied into each
    crew. The answer for a builtin type never changes. Without the pydantic internals
    this relies on, it does nothing."""
    try:
        from pydantic._internal import _fields, _generate_schema
    except ImportError:
        return
    original = getattr(_fields, "takes_validated_data_argument", None)
    imported = getattr(_generate_schema, "takes_validated_data_argument", None)
    if original is None or imported is not original:
        return
    answers = {factory: original(factory) for factory in (list, dict, set, tuple, frozenset)}

    def takes_validated_data_argument(default_factory):  # type: ignore[no-untyped-def]
        # Only a plain class is looked up, so an unhashable callable never is.
        if type(default_factory) is type and default_factory in answers:
            return answers[default_factory]
        return original(default_factory)

    _fields.takes_validated_data_argument = takes_validated_data_argument
    _generate_schema.takes_validated_data_argument = takes_validated_data_argument


def _serve(sock: socket.socket, pid_ns: int) -> int:
    """Answers spawn requests and reports exits until the host closes the socket."""
    # SIGCHLD only wakes the loop, through the wakeup pipe; reaping happens in the loop.
    wakeup, wakeup_write = os.pipe()
    os.set_blocking(wakeup, False)
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, _on_sigchld)
    while True:
        readable, _, _ = select.select([sock, wakeup], [], [])
        if wakeup in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wakeup, 512):
                    pass
            _report_exits(sock)
        if sock in readable:
            data, fds, flags, _ = socket.recv_fds(sock, _MAX_MESSAGE, _MAX_FDS)
            if not data and not fds:
                return 0
            _handle(sock, data, fds, flags, pid_ns)


def _on_sigchld(signum: int, frame: object) -> None:
    """Nothing: the wakeup fd already woke the loop, which reaps."""


def _report_exits(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, {"type": "exited", "pid": pid, "status": status})


def _handle(sock: socket.socket, data: bytes, fds: list[int], flags: int, pid_ns: int) -> None:
    """One host message; anything but a spawn request is logged and dropped."""
    try:
        message = decode(data)
    except HostError as exc:
        _close(fds)
        _log(str(exc))
        return
    request_id = message.get("id")
    if message["type"] != "spawn" or type(request_id) is not int:
        _close(fds)
        _log(f"the host sent a message that is not a spawn request with an id: {message!r:.200}")
        return
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError(
                f"the request was cut off (over {_MAX_MESSAGE} bytes or {_MAX_FDS} fds)"
            )
        plan = Plan(message, fds)
        _check_single_threaded()
    except ValueError as exc:
        _close(fds)
        _send(sock, {"type": "refused", "id": request_id, "reason": str(exc)})
        return
    _spawn(sock, plan, pid_ns)


def _check_single_threaded() -> None:
    """fork copies only the calling thread: another one could hold a lock forever."""
    tasks = os.listdir("/proc/self/task")
    if len(tasks) != 1:
        names = []
        for task in tasks:
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/comm") as comm:
                names.append(f"{task} {comm.read().strip()}")
        raise ValueError(
            f"the zygote runs {len(tasks)} threads ({', '.join(names)}); it forks only "
            "when it runs one"
        )


def _spawn(sock: socket.socket, plan: Plan, pid_ns: int) -> None:
    zygote = os.getpid()  # the child's parent; as PID 1 of a new namespace it cannot ask
    unshared = False
    pid, error = -1, None
    try:
        if plan.pid_namespace:
            # The next child, and only it, becomes PID 1 of a new pid namespace.
            _check(_libc.unshare(CLONE_NEWPID), "unshare(CLONE_NEWPID)")
            unshared = True
        # Whatever the zygote buffered must not be written again by the child.
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
    except OSError as exc:
        error = exc
    if pid == 0:
        _become_crew(plan, sock, zygote)
    if unshared:
        _rejoin_pid_namespace(sock, plan, pid_ns, pid)
    _close(plan.fds)
    try:
        if error is not None:
            raise error
        # Race-free: the child stays unreaped (a zombie at worst) until the loop reaps it.
        pidfd = os.pidfd_open(pid)
    except OSError as exc:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
        _send(sock, {"type": "refused", "id": plan.id, "reason": f"cannot fork the crew: {exc}"})
        return
    try:
        socket.send_fds(sock, [_encode({"type": "spawned", "id": plan.id, "pid": pid})], [pidfd])
    finally:
        os.close(pidfd)


def _rejoin_pid_namespace(sock: socket.socket, plan: Plan, pid_ns: int, pid: int) -> None:
    """Back to the zygote's own pid namespace for its next children, or exit: the zygote
    must never fork a crew into another crew's namespace."""
    try:
        _check(_libc.setns(pid_ns, CLONE_NEWPID), "setns(CLONE_NEWPID)")
    except OSError as exc:
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
        reason = f"cannot return to the zygote's pid namespace: {exc}"
        _log(reason)
        _send(sock, {"type": "refused", "id": plan.id, "reason": reason})
        sys.stderr.flush()
        os._exit(1)


def _become_crew(plan: Plan, sock: socket.socket, zygote: int) -> NoReturn:
    """The forked child: the sandbox a cold start gets, then the runner. Never returns."""
    try:
        sock.detach()  # fd 0 becomes the crew's stdin: the socket object must not close it
        for target, fd in enumerate(plan.fds[:3]):
            os.dup2(fd, target)  # first, so that errors reach the host log
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        _enter_sandbox(plan, zygote)
        reset_inherited_state()
        sys.argv = ["-c"]
        sys.orig_argv = [sys.orig_argv[0], "-c", _RUNNER_ENTRY]
    except BaseException as exc:
        line = f"live-crew-zygote: cannot start crew '{plan.crew}': {describe(exc)}\n"
        with contextlib.suppress(OSError):
            os.write(2, line.encode())
        os._exit(1)
    from live_crew_runner import serve

    try:
        serve.main()
    except BaseException:
        sys.excepthook(*sys.exc_info())
    os._exit(1)  # never back into the zygote's loop


def _enter_sandbox(plan: Plan, zygote: int) -> None:
    """``PreExec::run`` of ``sandbox/src/preexec.rs``, step for step."""
    # 1. Own session and process group, so the host can signal the crew as a whole.
    os.setsid()
    # 2. Die with the zygote, which dies with the host.
    _die_with_parent(zygote)
    # 3. Cgroups: the host moves the crew into its groups itself, before its first input.
    # 4. The empty network namespace: only a loopback interface, and that down.
    if plan.netns_fd is not None:
        _check(_libc.setns(plan.netns_fd, CLONE_NEWNET), "setns(CLONE_NEWNET)")
    # 5. Resource limits, set while still privileged enough to lower hard limits.
    for limit, soft, hard in plan.rlimits:
        resource.setrlimit(limit, (soft, hard))
    # 6. Only stdin, stdout and stderr stay open (and the ruleset, until step 9); the
    #    crew's own folder and environment.
    env = _read_env(plan.env_fd)
    if plan.landlock_fd is None:
        os.closerange(3, _FD_END)
    else:
        os.closerange(3, plan.landlock_fd)
        os.closerange(plan.landlock_fd + 1, _FD_END)
    os.chdir(plan.workdir)
    os.environ.clear()
    os.environ.update(env)
    _show_in_proc()
    # 7. Become the crew's user. Changing credentials clears the parent-death signal, so
    #    arm it again.
    if plan.user is not None:
        uid, gid = plan.user
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        _die_with_parent(zygote)
    # 8. No capabilities, even for a crew that runs as root, and no privileges gained
    #    through exec: Landlock and seccomp need no_new_privs, and it is right for every crew.
    _drop_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    # 9. Filesystem rules, for this process and everything it starts.
    if plan.landlock_fd is not None:
        _check(
            _libc.syscall(
                ctypes.c_long(SYS_LANDLOCK_RESTRICT_SELF),
                ctypes.c_long(plan.landlock_fd),
                ctypes.c_long(0),
            ),
            "landlock_restrict_self",
        )
        os.close(plan.landlock_fd)
    # 10. Last, as it denies calls the steps above make: the seccomp filters, in order.
    for program in plan.seccomp:
        fprog = _SockFprog(len(program) // _SOCK_FILTER_SIZE, program)
        _prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


def _die_with_parent(parent: int) -> None:
    """Asks for SIGKILL when the parent dies, then checks the parent is still ``parent``:
    if it died before the prctl, the signal will never come, so exit now."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    # PID 1 of its own pid namespace sees its parent, outside, as pid 0.
    if (os.getppid() or _parent_from_proc()) != parent:
        os._exit(1)


def _parent_from_proc() -> int:
    """The parent's pid as the zygote sees it: ``/proc`` is the zygote's mount, so
    ``/proc/self/stat`` shows the zygote's pids."""
    return _stat_fields(4)[0]


def _stat_fields(*numbers: int) -> list[int]:
    """Fields of ``/proc/self/stat`` (``pid (comm) state ppid ...``) by their numbers,
    counted from 1, all past comm."""
    fd = os.open("/proc/self/stat", os.O_RDONLY | os.O_CLOEXEC)
    try:
        text = os.read(fd, 4096)
    finally:
        os.close(fd)
    # comm may hold spaces and parentheses; the fields after it may not.
    rest = text[text.rindex(b")") + 1 :].split()
    return [int(rest[number - 3]) for number in numbers]


def _read_env(fd: int) -> list[tuple[str, str]]:
    """The crew's environment from its pipe, which the host filled and closed."""
    os.set_blocking(fd, True)  # the host made it non-blocking
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    env = json.loads(b"".join(chunks))
    if not isinstance(env, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(s, str) for s in pair)
        for pair in env
    ):
        raise ValueError("the environment pipe holds no [[name, value], ...] list")
    return [(name, value) for name, value in env]


#: The blocks ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` show, kept alive for
#: the crew's life.
_proc_blocks: list[ctypes.Array[ctypes.c_char]] = []


class _ProcTemplate:
    """What ``_show_in_proc`` needs that is the same in every crew, read once in the
    zygote: the interpreter's path and the fields of ``struct prctl_mm_map`` that a fork
    keeps (the code, data and stack addresses), so a crew's start reads no ``/proc``."""

    def __init__(self) -> None:
        with open("/proc/self/cmdline", "rb") as cmdline:
            program = cmdline.read().split(b"\0", 1)[0]
        self.arg = b"\0".join([program, b"-c", _RUNNER_ENTRY.encode(), b""])
        self.fields = dict(zip(_STAT_FIELDS, _stat_fields(*_STAT_FIELDS.values())))


#: Set in ``main`` before the zygote serves.
_proc_template: _ProcTemplate | None = None


def _show_in_proc() -> None:
    """Makes ``/proc/self/cmdline`` and ``/proc/self/environ`` (what ``ps`` and ``pgrep``
    read) show what a cold start's would: the runner's command line, the crew's environment.

    The kernel shows the blocks a process was exec'd with, and a forked crew never execs.
    PR_SET_MM_MAP moves them without privileges; a kernel built without
    CONFIG_CHECKPOINT_RESTORE refuses, and they keep showing the zygote's, which hold no
    secrets (``os.environ`` is the crew's either way).
    """
    template = _proc_template
    assert template is not None, "main() reads the template before serving"
    env = [os.fsencode(f"{name}={value}") for name, value in os.environ.items()]
    blocks = {"arg": template.arg, "env": b"\0".join([*env, b""]) if env else b""}
    mm = _MmMap(**template.fields)
    mm.brk = _libc.sbrk(ctypes.c_ssize_t(0))
    for name, block in blocks.items():
        buffer = ctypes.create_string_buffer(block, max(len(block), 1))
        _proc_blocks.append(buffer)
        setattr(mm, f"{name}_start", ctypes.addressof(buffer))
        setattr(mm, f"{name}_end", ctypes.addressof(buffer) + len(block))
    mm.exe_fd = 0xFFFFFFFF  # (u32)-1: /proc/self/exe stays
    try:
        _prctl(PR_SET_MM, PR_SET_MM_MAP, ctypes.addressof(mm), ctypes.sizeof(mm))
    except OSError as exc:
        os.write(2, f"live-crew-zygote: /proc shows the zygote's command line: {exc}\n".encode())


def _drop_capabilities() -> None:
    """Empties the bounding set (so exec cannot bring any back), the ambient set, and the
    effective, permitted and inheritable sets. Without CAP_SETPCAP (a crew user that is
    not root has none left) the bounding set cannot be touched and needs not be."""
    # Capability numbers run without gaps to CAP_LAST_CAP (40 on Linux 6.x): past it
    # EINVAL, and without CAP_SETPCAP EPERM; either way the loop is done.
    for capability in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(capability), *_ZEROS[:3]) != 0:
            break
    _libc.prctl(PR_CAP_AMBIENT, ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), *_ZEROS[:3])
    header = _CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    empty = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), empty), "capset")


def _prctl(option: int, *args: int) -> None:
    values = [ctypes.c_ulong(arg) for arg in args]
    _check(_libc.prctl(option, *values, *_ZEROS[len(values) :]), f"prctl({option})")


def _check(result: int, call: str) -> None:
    if result == -1:
        number = ctypes.get_errno()
        raise OSError(number, f"{call}: {os.strerror(number)}")


def reset_inherited_state() -> None:
    """Redoes, in the crew's context, what the zygote's imports computed in its own.

    A cold-started crew computes these at import from its own ``HOME``, ``TMPDIR``, working
    folder and environment (or from fresh randomness); a forked one would keep the
    zygote's. Runs after ``os.environ`` and the working folder became the crew's:

    - ``tempfile.tempdir`` (TMPDIR): None, so tempfile looks again;
    - ``sys.stdin``, ``sys.stdout``, ``sys.stderr`` and ``sys.__stdin__`` and the like: new
      ones on fds 0, 1 and 2, as the interpreter makes them (stderr line-buffered, with
      ``backslashreplace``), which no buffered zygote output can leak into;
    - ``random``: reseeded; ``numpy.random``'s global generator too, when it is loaded;
    - ``multiprocessing``: the main process's ``authkey`` (random at import) and
      ``multiprocessing.process.ORIGINAL_DIR`` (the working folder);
    - ``openai.lib.bedrock._LEGACY_SIGNATURE_KEY`` (random at import) and ``openai``'s
      ``api_type``, ``api_version``, ``azure_endpoint`` and ``azure_ad_token`` (their
      environment variables);
    - ``site.USER_BASE``, ``site.USER_SITE`` and sysconfig's ``userbase`` (HOME);
    - ``rich._IMPORT_CWD`` (the working folder, for traceback paths);
    - ``crewai_core.settings.DEFAULT_CONFIG_PATH`` and ``crewai.skills.cache._CACHE_ROOT``
      (HOME);
    - ``crewai.rag.chromadb.constants.DEFAULT_STORAGE_PATH`` and its copy in
      ``crewai.rag.chromadb.config`` (HOME, the working folder's name, CREWAI_STORAGE_DIR);
    - ``crewai_core.lock_store._REDIS_URL`` (REDIS_URL);
    - ``crewai_core.plus_api._MACHINE_TRANSPORT_ENV`` (the proxy and CA variables);
    - ``chromadb``'s ``ProductTelemetryClient.USER_ID_PATH`` and
      ``ONNXMiniLM_L6_V2.DOWNLOAD_PATH`` (HOME).

    Module globals are reset only where their module is loaded.
    """
    tempfile.tempdir = None
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, f"__{name}__")
        stream = open(  # noqa: SIM115 - lives as long as the process
            fd,
            "r" if fd == 0 else "w",
            buffering=1 if fd == 2 else -1,
            encoding=old.encoding if old else None,
            errors="backslashreplace" if fd == 2 else (old.errors if old else None),
            closefd=False,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    random.seed()
    modules = sys.modules
    if (numpy_random := modules.get("numpy.random")) is not None:
        numpy_random.seed()
    if (process := modules.get("multiprocessing.process")) is not None:
        process.current_process().authkey = os.urandom(32)
        process.ORIGINAL_DIR = os.getcwd()
    if (bedrock := modules.get("openai.lib.bedrock")) is not None:
        bedrock._LEGACY_SIGNATURE_KEY = os.urandom(32)
    if (openai := modules.get("openai")) is not None:
        openai.api_type = os.environ.get("OPENAI_API_TYPE")
        openai.api_version = os.environ.get("OPENAI_API_VERSION")
        openai.azure_endpoint = os.environ.get("AZURE_OPENAI_ENDPOINT")
        openai.azure_ad_token = os.environ.get("AZURE_OPENAI_AD_TOKEN")
    if (site := modules.get("site")) is not None:
        site.USER_BASE = site.USER_SITE = None
        site.getusersitepackages()  # computes both again
        if (sysconfig := modules.get("sysconfig")) is not None:
            sysconfig.get_config_vars()["userbase"] = site.USER_BASE
    if (rich := modules.get("rich")) is not None:
        rich._IMPORT_CWD = os.getcwd()
    if (settings := modules.get("crewai_core.settings")) is not None:
        settings.DEFAULT_CONFIG_PATH = Path.home() / ".config" / "crewai" / "settings.json"
    if (skills := modules.get("crewai.skills.cache")) is not None:
        skills._CACHE_ROOT = Path.home() / ".crewai" / "skills"
    if (chroma_constants := modules.get("crewai.rag.chromadb.constants")) is not None:
        from crewai_core.paths import db_storage_path

        chroma_constants.DEFAULT_STORAGE_PATH = db_storage_path()
        if (chroma_config := modules.get("crewai.rag.chromadb.config")) is not None:
            chroma_config.DEFAULT_STORAGE_PATH = chroma_constants.DEFAULT_STORAGE_PATH
    if (lock_store := modules.get("crewai_core.lock_store")) is not None:
        lock_store._REDIS_URL = os.environ.get("REDIS_URL")
    if (plus_api := modules.get("crewai_core.plus_api")) is not None:
        plus_api._MACHINE_TRANSPORT_ENV = {
            key: value for key, value in os.environ.items() if plus_api._sets_transport(key)
        }
    if (telemetry := modules.get("chromadb.telemetry.product")) is not None:
        telemetry.ProductTelemetryClient.USER_ID_PATH = str(
            Path.home() / ".cache" / "chroma" / "telemetry_user_id"
        )
    if (onnx := modules.get("chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2")) is not None:
        model = onnx.ONNXMiniLM_L6_V2
        model.DOWNLOAD_PATH = Path.home() / ".cache" / "chroma" / "onnx_models" / model.MODEL_NAME


def _encode(message: Message) -> bytes:
    return dumps(message).encode()


def _send(sock: socket.socket, message: Message) -> None:
    sock.send(_encode(message))


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _log(text: str) -> None:
    print(f"live-crew-zygote: {text}", file=sys.stderr)
