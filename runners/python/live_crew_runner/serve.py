"""The runner's life: hello, ready, then one call at a time until shutdown or end of input."""

from __future__ import annotations

import faulthandler
import os
import sys

import live_crew_runner
from live_crew_runner import RUNNER_ID
from live_crew_runner.constants import PROTOCOL_VERSION
from live_crew_runner.handler import CrewError, public_message
from live_crew_runner.kinds import load_handler
from live_crew_runner.protocol import (
    Channel,
    HostError,
    check_call,
    encode,
    encode_result,
    parse_hello,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from live_crew_runner.handler import Handler
    from live_crew_runner.protocol import Message

#: Exit status when the host sent something this runner cannot understand.
EXIT_HOST_ERROR = 2


def main() -> NoReturn:
    faulthandler.enable()  # a crash in C code still leaves a traceback in the host log
    channel = Channel.take_stdio()
    live_crew_runner._channel = channel  # the LLM gateway's way to the host
    try:
        status = serve(channel)
    except HostError as exc:
        print(f"live-crew-runner: {exc}", file=sys.stderr)
        status = EXIT_HOST_ERROR
    except BrokenPipeError:
        status = 0  # the host went away; nobody is left to tell
    # Exit now, without joining threads the crew may have started: the host wants the
    # runner gone and would send SIGTERM after its grace period anyway.
    sys.stderr.flush()
    os._exit(status)


def serve(channel: Channel) -> int:
    messages = channel.messages()
    first = next(messages, None)
    if first is None:
        return 0
    hello = parse_hello(first)
    # Beat from here on: importing the crew (CrewAI, say) can take seconds.
    channel.start_heartbeat(hello.heartbeat_ms)
    handler = load_handler(hello)
    ready = {"type": "ready", "protocol": PROTOCOL_VERSION, "runner": RUNNER_ID, "features": ["llm"]}
    channel.send(ready)
    for message in messages:
        kind = message["type"]
        if kind == "call":
            channel.write(answer(handler, message, hello.crew, hello.crew_dir))
        elif kind == "shutdown":
            return 0
        elif kind in ("llm_response", "llm_error"):
            # The answer to a request made after its call ended (a crew thread that
            # kept going): nobody waits for it.
            print(f"live-crew-runner: dropped an '{kind}' that no call waits for", file=sys.stderr)
        else:
            raise HostError(f"unexpected message type '{kind}' after 'hello'")
    return 0


def answer(handler: Handler, message: Message, crew: str, crew_dir: str) -> bytes:
    """The encoded ``result`` or ``error`` line for one call."""
    call = check_call(message)
    live_crew_runner._call_id = call.get("call_id")
    try:
        actions, patch = handler(call)
    except CrewError as exc:
        return _error(call["id"], str(exc), crew, crew_dir)
    finally:
        live_crew_runner._call_id = None
    try:
        return encode_result(call["id"], actions, patch)
    except (TypeError, ValueError, RecursionError) as exc:
        # Values JSON cannot carry: a set, an object, NaN, a cycle, a lone surrogate...
        return _error(call["id"], f"the result cannot be sent as JSON: {exc}", crew, crew_dir)


def _error(call_id: int, message: str, crew: str, crew_dir: str) -> bytes:
    text = public_message(f"crew '{crew}': {message}", crew_dir)
    return encode({"type": "error", "id": call_id, "message": text})
