"""Runner protocol v1: framing, the protocol stream, heartbeats and host message checks.

One JSON object per line in each direction. The host writes to our stdin and reads our
stdout; anything else the process writes must go to stderr, which the host relays into its
log. ``Channel.take_stdio`` makes that hold even for crew code and C libraries.

Startup time counts (the host waits for ``ready``, and restarts cost the same again), so
this module imports only what is built into the interpreter: JSON goes straight through the
C accelerator ``_json`` that the ``json`` package wraps (``json`` itself pulls in ``re``),
and the heartbeat is a bare ``_thread`` thread. Type-only names live under
``TYPE_CHECKING`` so ``typing`` is never imported at run time.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock, start_new_thread

from live_crew_runner import RUNNER_ID
from live_crew_runner.constants import PROTOCOL_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, BinaryIO, NoReturn, TypedDict

    Message = dict[str, Any]
    Scan = Callable[[str, int], tuple[Any, int]]
    Encode = Callable[[Any, int], Sequence[str]]

    class Call(TypedDict):
        """A ``call`` message as the host sends it."""

        type: str
        id: int
        stream_id: str
        slice: int
        slice_start: str
        slice_end: str
        events: list[Message]
        context: Message
        deps: dict[str, list[Message]]
        deadline_ms: int



_HEARTBEAT = b'{"type":"heartbeat"}\n'
_READ_BUFFER = 1 << 16  # one Linux pipe's worth


class HostError(Exception):
    """The host sent something this runner cannot understand; the runner exits."""


class Hello:
    """The checked ``hello`` message."""

    __slots__ = ("config", "crew", "crew_dir", "heartbeat_ms")

    def __init__(self, crew: str, crew_dir: str, config: Message, heartbeat_ms: int) -> None:
        self.crew = crew
        self.crew_dir = crew_dir
        self.config = config
        self.heartbeat_ms = heartbeat_ms

    def __repr__(self) -> str:
        return f"Hello(crew={self.crew!r}, crew_dir={self.crew_dir!r})"


# JSON the way json.loads and json.JSONEncoder do it, minus their Python layers (and minus
# importing ``json``, which imports ``re``): the C scanner and encoder below are the ones
# they use themselves. ``_json`` is part of CPython; without it, ``json`` does the work.


class _DecoderSettings:
    """What ``json.JSONDecoder()`` hands its C scanner: strict, plain dicts and numbers."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__


def _not_json(value: object) -> NoReturn:
    """What ``json.JSONEncoder.default`` does with a value JSON cannot carry."""
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


def _c_json() -> tuple[Scan, Encode] | None:
    try:
        from _json import encode_basestring, make_encoder, make_scanner
    except ImportError:  # pragma: no cover - not CPython
        return None
    scanner: Any = make_scanner  # typeshed's signature for it is off
    # What json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False,
    # check_circular=False) builds on every encode() call, built once. allow_nan=False
    # because NaN is not JSON. Without cycle markers a cycle ends in RecursionError, which
    # callers treat like any value JSON cannot carry; the markers cost every dict and list
    # a dict insert and delete.
    encoder = make_encoder(
        None, _not_json, encode_basestring, None, ":", ",", False, False, False
    )
    return scanner(_DecoderSettings()), encoder


def _scan_without_c(text: str, index: int) -> tuple[Any, int]:  # pragma: no cover
    raise ValueError("no _json")  # decode() falls back to json.loads


def _encode_without_c(value: Any, level: int) -> list[str]:  # pragma: no cover
    import json

    return [
        json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
        )
    ]


_scan, _encode = _c_json() or (_scan_without_c, _encode_without_c)


def dumps(value: Any) -> str:
    """Compact JSON text. Raises TypeError, ValueError or RecursionError when ``value``
    is not JSON."""
    return "".join(_encode(value, 0))


def encode(message: Message) -> bytes:
    """One protocol line. Raises TypeError, ValueError or RecursionError when ``message``
    is not JSON."""
    return (dumps(message) + "\n").encode()


def encode_result(call_id: int, actions: list[Message], patch: Message | None) -> bytes:
    """``encode({"type": "result", "id": call_id, "actions": actions, "context_patch":
    patch})`` byte for byte, leaving out an empty patch. Formatting the envelope costs less
    than encoding it; ``call_id`` is an int (``check_call``), so its text is its JSON.
    """
    line = f'{{"type":"result","id":{call_id},"actions":{"".join(_encode(actions, 0))}'
    if patch:
        line += f',"context_patch":{"".join(_encode(patch, 0))}'
    return (line + "}\n").encode()


def decode(line: bytes) -> Message:
    """A host line as a message; exactly what ``json.loads(line)`` makes of it."""
    try:
        # The common case, one compact object on a UTF-8 line, is one C call.
        text = line.decode("utf-8", "surrogatepass")  # as json.loads decodes UTF-8
        message, end = _scan(text, 0)
        if end != len(text) and text[end:] != "\n":
            raise ValueError("more after the object")
    except Exception:
        # Anything else (whitespace before the object, a byte order mark, an error) goes
        # to json.loads itself, for the same value or its exact error message.
        message = _decode_slowly(line)
    if type(message) is not dict or type(message.get("type")) is not str:
        raise HostError(f"the host sent a line that is not a protocol message: {_excerpt(line)}")
    return message


def _decode_slowly(line: bytes) -> Any:
    import json

    try:
        return json.loads(line)
    except ValueError as exc:  # also covers invalid UTF-8
        raise HostError(
            f"the host sent a line that is not JSON ({exc}): {_excerpt(line)}"
        ) from None


def parse_hello(message: Message) -> Hello:
    if message["type"] != "hello":
        raise HostError(f"expected 'hello' as the first message, got '{message['type']}'")
    protocol = message.get("protocol")
    if protocol != PROTOCOL_VERSION:
        raise HostError(
            f"the host speaks protocol {protocol!r}, but {RUNNER_ID} speaks {PROTOCOL_VERSION}; "
            "use the runner bundled with this live-crew version"
        )
    crew, crew_dir, config = message.get("crew"), message.get("crew_dir"), message.get("config")
    heartbeat_ms = message.get("heartbeat_ms")
    if type(crew) is not str or type(crew_dir) is not str or type(config) is not dict:
        raise HostError("'hello' needs string 'crew' and 'crew_dir' and an object 'config'")
    if type(heartbeat_ms) is not int or heartbeat_ms <= 0:
        raise HostError(f"'hello' needs a positive integer 'heartbeat_ms', got {heartbeat_ms!r}")
    return Hello(crew, crew_dir, config, heartbeat_ms)


def check_call(message: Message) -> Call:
    """Checks the fields every runner kind relies on; runs once per call, so keep it cheap."""
    try:
        if (
            type(message["id"]) is int
            and type(message["events"]) is list
            and type(message["context"]) is dict
            and type(message["deps"]) is dict
        ):
            return message  # type: ignore[return-value]
    except KeyError:
        pass
    raise HostError(
        "a 'call' needs an integer 'id', a list 'events' and objects 'context' and 'deps'"
    )


def _excerpt(line: bytes) -> str:
    text = line.decode("utf-8", "replace").rstrip("\n")
    return text if len(text) <= 200 else text[:200] + "..."


class _LlmRequests:
    """The LLM requests of one channel: answers by request id, and whether a waiting
    thread is reading the host's lines for all of them. ``threading`` is imported only
    by crews that ask an LLM."""

    def __init__(self) -> None:
        from threading import Condition

        self.condition = Condition()
        self.answers: dict[int, Message] = {}
        self.reading = False
        self.next_id = 0


class Channel:
    """The protocol stream to and from the host. ``write`` is safe from any thread."""

    def __init__(self, reader: BinaryIO, out_fd: int) -> None:
        self._reader = reader
        self._out_fd = out_fd
        self._lock = allocate_lock()
        self._llm: _LlmRequests | None = None  # made on the first LLM request

    @classmethod
    def take_stdio(cls) -> Channel:
        """Moves the protocol onto private fds, so nothing else can read or write it.

        Afterwards fd 1 and ``sys.stdout`` are stderr (stray prints, C-level writes and
        child processes' output go to the host log), and fd 0 is an empty pipe (``input()``
        or a child process reading stdin sees end of file instead of stealing host lines).
        ``os.dup`` makes the private fds non-inheritable, so child processes never get them.
        """
        sys.stdout.flush()
        in_fd, out_fd = os.dup(0), os.dup(1)
        empty, writer = os.pipe()  # a pipe, not /dev/null: the sandbox may hide /dev
        os.close(writer)
        os.dup2(empty, 0)
        os.close(empty)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(open(in_fd, "rb", buffering=_READ_BUFFER), out_fd)

    def messages(self) -> Iterator[Message]:
        """Host messages until end of input."""
        for line in self._reader:
            yield decode(line)

    def send(self, message: Message) -> None:
        self.write(encode(message))

    def llm(self, call_id: str | None, model: str, body: Message) -> Message:
        """Sends one ``llm_request`` and waits for its ``llm_response`` or ``llm_error``.

        Safe from any thread, several at once: during a call the host sends nothing else,
        so one waiting thread at a time reads the host's lines and hands each answer to
        the thread whose request it is. Raises HostError when the host sends anything
        else or goes away.
        """
        with self._lock:
            if self._llm is None:
                self._llm = _LlmRequests()
            requests = self._llm
        with requests.condition:
            requests.next_id += 1
            request_id = requests.next_id
        self.send(
            {"type": "llm_request", "id": request_id, "call": call_id, "model": model, "body": body}
        )
        with requests.condition:
            while request_id not in requests.answers:
                if requests.reading:
                    requests.condition.wait()
                    continue
                requests.reading = True
                requests.condition.release()
                try:
                    line = self._reader.readline()
                finally:
                    requests.condition.acquire()
                    requests.reading = False
                    requests.condition.notify_all()
                if not line:
                    raise HostError("the host closed stdin while an LLM request was waiting")
                answer = decode(line)
                if answer["type"] not in ("llm_response", "llm_error") or (
                    type(answer.get("id")) is not int
                ):
                    raise HostError(
                        "expected 'llm_response' or 'llm_error' during a call, got "
                        f"'{answer['type']}'"
                    )
                requests.answers[answer["id"]] = answer
            return requests.answers.pop(request_id)

    def write(self, data: bytes) -> None:
        """Writes whole lines; the lock keeps heartbeats from splitting a reply."""
        with self._lock:
            written = os.write(self._out_fd, data)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._out_fd, view[written:])

    def start_heartbeat(self, interval_ms: int) -> None:
        """Sends a heartbeat every ``interval_ms`` from a background thread, also during calls.

        A bare ``_thread`` thread (``threading`` costs an import): the runner always ends
        with ``os._exit``, so nothing ever waits for it.
        """
        start_new_thread(self._beat, (interval_ms / 1000,))

    def _beat(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            # If the host is gone, exit now rather than when a long call ends: nobody will
            # read its result. A broken pipe is the normal way to learn that.
            try:
                self.write(_HEARTBEAT)
            except BrokenPipeError:
                os._exit(0)
            except OSError as exc:
                print(f"live-crew-runner: cannot write to the host: {exc}", file=sys.stderr)
                os._exit(1)
