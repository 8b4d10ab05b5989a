"""Runner protocol v1: framing, the protocol stream, heartbeats and host message checks.

One JSON object per line in each direction. The host writes to our stdin and reads our
stdout; anything else the process writes must go to stderr, which the host relays into its
log. ``Channel.take_stdio`` makes that hold even for crew code and C libraries.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypedDict, cast

from live_crew_runner import RUNNER_ID

PROTOCOL_VERSION = 1

Message = dict[str, Any]

# Encoding a reply runs once per call: build the encoder once (json.dumps with non-default
# options builds a new one each time). allow_nan=False because NaN is not JSON.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_HEARTBEAT = b'{"type":"heartbeat"}\n'
_READ_BUFFER = 1 << 16  # one Linux pipe's worth


class HostError(Exception):
    """The host sent something this runner cannot understand; the runner exits."""


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


@dataclass(frozen=True)
class Hello:
    """The checked ``hello`` message."""

    crew: str
    crew_dir: str
    config: Message
    heartbeat_ms: int


def encode(message: Message) -> bytes:
    """One protocol line. Raises TypeError or ValueError when ``message`` is not JSON."""
    return (_ENCODER.encode(message) + "\n").encode()


def decode(line: bytes) -> Message:
    try:
        message = json.loads(line)
    except ValueError as exc:  # also covers invalid UTF-8
        raise HostError(
            f"the host sent a line that is not JSON ({exc}): {_excerpt(line)}"
        ) from None
    if type(message) is not dict or type(message.get("type")) is not str:
        raise HostError(f"the host sent a line that is not a protocol message: {_excerpt(line)}")
    return message


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
    return Hello(crew=crew, crew_dir=crew_dir, config=config, heartbeat_ms=heartbeat_ms)


def check_call(message: Message) -> Call:
    """Checks the fields every runner kind relies on; runs once per call, so keep it cheap."""
    if (
        type(message.get("id")) is not int
        or type(message.get("events")) is not list
        or type(message.get("context")) is not dict
        or type(message.get("deps")) is not dict
    ):
        raise HostError(
            "a 'call' needs an integer 'id', a list 'events' and objects 'context' and 'deps'"
        )
    return cast(Call, message)


def _excerpt(line: bytes) -> str:
    text = line.decode("utf-8", "replace").rstrip("\n")
    return text if len(text) <= 200 else text[:200] + "..."


class Channel:
    """The protocol stream to and from the host. ``write`` is safe from any thread."""

    def __init__(self, reader: BinaryIO, out_fd: int) -> None:
        self._reader = reader
        self._out_fd = out_fd
        self._lock = threading.Lock()

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

    def write(self, data: bytes) -> None:
        """Writes whole lines; the lock keeps heartbeats from splitting a reply."""
        with self._lock:
            written = os.write(self._out_fd, data)
            if written < len(data):
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._out_fd, view[written:])

    def start_heartbeat(self, interval_ms: int) -> None:
        """Sends a heartbeat every ``interval_ms`` from a daemon thread, also during calls."""
        threading.Thread(
            target=self._beat, args=(interval_ms / 1000,), name="live-crew-heartbeat", daemon=True
        ).start()

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
