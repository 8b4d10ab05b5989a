"""The LLM gateway's runner side (SPEC section 14), over real pipes: a `prompt` crew's
completion goes to the host as an `llm_request`, and the host's `llm_response` or
`llm_error` comes back into the call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("crewai")

from conftest import call_message, event  # noqa: E402

CONFIG = {
    "crew": "greeter",
    "triggers": ["*"],
    "runner": {
        "kind": "prompt",
        "llm": "test/model-a",
        "user_template": "Say hello in slice {{ slice }}.",
        "outputs": [{"kind": "said", "payload": {"text": "{{ generated }}"}}],
    },
}


@pytest.fixture
def greeter(spawn: Any, tmp_path: Path) -> Any:
    crew_dir = tmp_path / "greeter"
    crew_dir.mkdir()
    runner = spawn(crew_dir)
    ready = runner.hello(CONFIG, timeout=60)
    assert ready["type"] == "ready" and "llm" in ready["features"], ready
    return runner


def test_a_completion_goes_to_the_host_and_its_answer_into_the_call(greeter: Any):
    greeter.send(call_message(1, [event("tick", {})], {}, {}))
    request = greeter.recv()
    assert request["type"] == "llm_request", request
    assert (request["call"], request["model"]) == ("match1:0:crew-1", "test/model-a")
    users = [m["content"] for m in request["body"]["messages"] if m["role"] == "user"]
    assert users == ["Say hello in slice 0."]
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}]}
    greeter.send({"type": "llm_response", "id": request["id"], "body": answer})
    result = greeter.recv()
    assert result["type"] == "result", result
    assert result["actions"] == [{"kind": "said", "payload": {"text": "Hello!"}}]


def test_a_refused_request_fails_the_call_with_the_hosts_reason(greeter: Any):
    greeter.send(call_message(2, [event("tick", {})], {}, {}))
    request = greeter.recv()
    greeter.send(
        {
            "type": "llm_error",
            "id": request["id"],
            "reason": "unknown_provider",
            "message": "no provider 'test' in llm.providers",
        }
    )
    error = greeter.recv()
    assert error["type"] == "error", error
    assert "unknown_provider" in error["message"] and "no provider 'test'" in error["message"]


def test_the_request_carries_tools_and_response_format_in_openai_form():
    from crewai.tools import BaseTool
    from crewai.utilities.agent_utils import convert_tools_to_openai_schema

    from live_crew_runner.gateway_llm import GatewayLLM

    class Lookup(BaseTool):
        name: str = "lookup"
        description: str = "Looks a team up."

        def _run(self, team: str) -> str:
            return team

    llm = GatewayLLM(model="test/model-a", temperature=0.3)
    llm.response_format = {"type": "json_object"}
    # The tools as CrewAI's agent executor hands them to an LLM.
    tools, _functions, _names = convert_tools_to_openai_schema([Lookup()])
    body = llm._body("Hello", tools)
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
    assert body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"}
    (tool,) = body["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "lookup"
    assert "team" in tool["function"]["parameters"]["properties"]
    assert body["tool_choice"] == "auto"
