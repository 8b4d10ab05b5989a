"""What the ``crewai`` and ``prompt`` kinds share: a quiet CrewAI and the LLM override.

CrewAI is imported only after ``import_crewai`` has set its opt-out variables: telemetry
and tracing read them when their modules load. Its home-directory files (settings, the
kickoff-outputs database) go under ``HOME``, which the host points at the runner's
private temp folder.
"""

from __future__ import annotations

import os
import sys

from live_crew_runner.handler import CrewError, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from crewai.llms.base_llm import BaseLLM

#: Forced, not defaulted: a crew's `env` must not turn uploads back on by accident.
_QUIET = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_DISABLE_TRACKING": "true",
    "OTEL_SDK_DISABLED": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
}

#: Names the LLM for every agent; set on the host, it wins over `runner.llm`.
LLM_ENV = "LIVE_CREW_LLM"


def import_crewai() -> None:
    """Imports CrewAI with telemetry and tracing off, and every model it would make by
    name going through the host's LLM gateway; a clear error when it is missing."""
    os.environ.update(_QUIET)
    try:
        import crewai  # noqa: F401
    except ImportError as exc:
        raise CrewError(
            f"cannot import crewai ({describe(exc)}); install it into the interpreter this "
            f"crew runs with ({sys.executable}), or point runner.python or LIVE_CREW_PYTHON "
            "at one that has it"
        ) from None
    _make_models_through_the_gateway()


def _make_models_through_the_gateway() -> None:
    """Agents and crews make their models from names (``llm: anthropic/claude-sonnet-4``
    in agents.yaml, a @CrewBase's config, CrewAI's default) with ``create_llm``; here a
    name becomes the gateway's model (SPEC section 14), so CrewAI never builds a
    provider client in a crew that has no network and no key, nor needs the provider's
    package installed."""
    import crewai.agent.core as agent_core
    import crewai.crew as crew_module

    original = agent_core.create_llm
    if getattr(original, "live_crew_gateway", False):
        return

    def create_llm(llm_value: Any = None) -> Any:
        if isinstance(llm_value, str):
            return make_llm(llm_value)
        return through_gateway(original(llm_value))

    create_llm.live_crew_gateway = True  # type: ignore[attr-defined]
    agent_core.create_llm = create_llm
    crew_module.create_llm = create_llm


def through_gateway(llm: Any) -> Any:
    """``llm`` as the gateway's model of the same ``<provider>/<model>``, unless it is one
    of ours (the gateway's, or ``fake``) or names no model."""
    from live_crew_runner.fake_llm import FakeLLM
    from live_crew_runner.gateway_llm import GatewayLLM

    model = getattr(llm, "model", None)
    if llm is None or isinstance(llm, (GatewayLLM, FakeLLM)) or not model:
        return llm
    provider = getattr(llm, "provider", None)
    named = f"{provider}/{model}" if provider and "/" not in model else model
    return GatewayLLM(model=named, temperature=getattr(llm, "temperature", None))


def llm_model(runner: dict[str, Any]) -> str | None:
    """The model that replaces every agent's LLM: ``$LIVE_CREW_LLM``, else ``runner.llm``."""
    model = os.environ.get(LLM_ENV) or runner.get("llm")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise CrewError(f"runner.llm must be a model name such as 'fake', got {model!r}")
    return model


def make_llm(model: str) -> BaseLLM:
    """``fake``, or ``<provider>/<model>``, which the host's LLM gateway completes
    (SPEC section 14): the crew itself needs no network and no API key."""
    try:
        if model == "fake":
            from live_crew_runner.fake_llm import FakeLLM

            return FakeLLM(model=model)
        from live_crew_runner.gateway_llm import GatewayLLM

        return GatewayLLM(model=model)
    except Exception as exc:
        print_traceback(exc)
        raise CrewError(f"cannot create the LLM '{model}': {describe(exc)}") from None


def print_traceback(exc: BaseException) -> None:
    """The crew's traceback goes to the host log (stderr); the reply gets one line."""
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
