"""``llm: fake``: a deterministic, offline LLM on CrewAI's ``BaseLLM``, for tests and demos.

The answer depends only on the prompt: the same messages always give the same text. For a
CrewAI task it quotes the task's interpolated description, so a run shows that the inputs
reached the prompt. A description that is itself one JSON object is answered with exactly
that JSON, so an offline crew can return ``actions`` or a ``context_patch`` (see
``docs/CREWAI.md``). Importing this module imports CrewAI.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from crewai.llms.base_llm import BaseLLM

MODEL = "fake"


class FakeLLM(BaseLLM):
    """Answers at once, without network, as a final answer CrewAI's agents accept."""

    llm_type: str = "fake"

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
        return answer(messages, getattr(from_task, "description", None))

    async def acall(self, messages: Any, *args: Any, **kwargs: Any) -> str:
        return answer(messages, getattr(kwargs.get("from_task"), "description", None))

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return 128_000

    def get_input_tokens_count(self, messages: Any, *args: Any, **kwargs: Any) -> int:
        # BaseLLM's estimate logs a warning on every call; the fake's count is as good.
        return len(_prompt_text(messages)) // 4 + 1


def answer(messages: str | list[dict[str, Any]], description: str | None) -> str:
    """The fake's reply to ``messages``; ``description`` is the task's, if any."""
    text = _prompt_text(messages)
    quoted = (description if description is not None else _last_user_message(messages)).strip()
    if _is_json_object(quoted):
        return quoted
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"[fake {digest}] {quoted}"


def _prompt_text(messages: str | list[dict[str, Any]]) -> str:
    if isinstance(messages, str):
        return messages
    return "\n".join(f"{m.get('role')}: {_content(m)}" for m in messages)


def _last_user_message(messages: str | list[dict[str, Any]]) -> str:
    if isinstance(messages, str):
        return messages
    users = [_content(m) for m in messages if m.get("role") == "user"]
    return users[-1] if users else _prompt_text(messages)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    # Multimodal content: a list of parts; keep the text ones, in order.
    parts = content if isinstance(content, list) else []
    return " ".join(p.get("text", "") for p in parts if isinstance(p, dict))


def _is_json_object(text: str) -> bool:
    if not (text.startswith("{") and text.endswith("}")):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
