"""An LLM on CrewAI's ``BaseLLM`` that asks the host (SPEC section 14).

The crew needs neither network nor an API key: each completion goes to the host as an
``llm_request`` whose body is an OpenAI-compatible chat-completions request, and the host
calls the provider its configuration names (``llm.providers``). Importing this module
imports CrewAI.
"""

from __future__ import annotations

import json
from typing import Any

from crewai.llms.base_llm import BaseLLM

import live_crew_runner


class GatewayError(RuntimeError):
    """The host could not complete the request: ``reason`` says why (``rate_limited``,
    ``budget``, ``provider``, ``unknown_provider``...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"the LLM gateway refused the request ({reason}): {message}")
        self.reason = reason


class GatewayLLM(BaseLLM):
    """Completes through the host; ``model`` is ``<provider>/<model>``."""

    llm_type: str = "live-crew-gateway"

    def call(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: Any | None = None,
    ) -> str | list[dict[str, Any]]:
        return self._complete(messages, tools, available_functions, from_task, from_agent)

    async def acall(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        return self.call(messages, *args, **kwargs)

    def _complete(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        available_functions: dict[str, Any] | None,
        from_task: Any | None,
        from_agent: Any | None,
    ) -> str | list[dict[str, Any]]:
        """The answer's text; or, when the model calls tools, the tool calls (for the
        agent to run) or with ``available_functions`` the first call's result, as
        CrewAI's own OpenAI LLM does."""
        channel = live_crew_runner._channel
        if channel is None:
            raise GatewayError("no_host", "the LLM gateway is reachable only from a running crew")
        answer = channel.llm(live_crew_runner.call_id(), self.model, self._body(messages, tools))
        if answer["type"] == "llm_error":
            raise GatewayError(str(answer.get("reason")), str(answer.get("message")))
        try:
            message = answer["body"]["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise GatewayError("provider", "the answer has no choices[0].message") from None
        tool_calls = message.get("tool_calls")
        if tool_calls and not available_functions:
            return tool_calls
        if tool_calls:
            function = tool_calls[0].get("function", {})
            try:
                arguments = json.loads(function.get("arguments") or "{}")
            except ValueError:
                arguments = {}
            result = self._handle_tool_execution(
                function_name=function.get("name", ""),
                function_args=arguments,
                available_functions=available_functions,
                from_task=from_task,
                from_agent=from_agent,
            )
            if result is not None:
                return result
        return self._apply_stop_words(message.get("content") or "")

    def _body(
        self, messages: str | list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        """The chat-completions request: CrewAI's messages are already in its format."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body: dict[str, Any] = {"messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.stop:
            body["stop"] = list(self.stop)
        if tools:
            # The tools in OpenAI's function format, converted as CrewAI's OpenAI LLM
            # converts them.
            from crewai.llms.providers.openai.completion import OpenAICompletion

            body["tools"] = OpenAICompletion._convert_tools_for_interference(self, tools)  # type: ignore[arg-type]
            body["tool_choice"] = "auto"
        response_format = getattr(self, "response_format", None)
        if isinstance(response_format, dict):
            body["response_format"] = response_format
        elif isinstance(response_format, type):
            from crewai.utilities.pydantic_schema_utils import generate_model_description

            body["response_format"] = generate_model_description(response_format)
        return body

    def supports_function_calling(self) -> bool:
        return True

    def get_context_window_size(self) -> int:
        return 128_000
