"""An LLM on CrewAI's ``BaseLLM`` that asks the host (SPEC section 14).

The crew needs neither network nor an API key: each completion goes to the host as an
``llm_request`` whose body is an OpenAI-compatible chat-completions request, and the host
calls the provider its configuration names (``llm.providers``). Importing this module
imports CrewAI.
"""

from __future__ import annotations

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
    ) -> str:
        return self._complete(messages)

    async def acall(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return self._complete(messages)

    def _complete(self, messages: str | list[dict[str, Any]]) -> str:
        channel = live_crew_runner._channel
        if channel is None:
            raise GatewayError("no_host", "the LLM gateway is reachable only from a running crew")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body: dict[str, Any] = {"messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.stop:
            body["stop"] = list(self.stop)
        answer = channel.llm(live_crew_runner.call_id(), self.model, body)
        if answer["type"] == "llm_error":
            raise GatewayError(str(answer.get("reason")), str(answer.get("message")))
        try:
            content = answer["body"]["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise GatewayError("provider", "the answer has no choices[0].message.content") from None
        return self._apply_stop_words(content or "")

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000
