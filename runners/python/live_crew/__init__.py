"""live-crew's Python API: register CrewAI crews (SPEC §11, ``CrewOrchestrator``) or the
seed prototype's event handlers (SPEC §17, ``Orchestrator``), and run them as live,
event-driven services with the ``live-crew`` host. See ``docs/CREWAI.md`` and the
runner's README."""

from live_crew.handlers import OrchestrationResult, Orchestrator, event_handler
from live_crew.models import Action, Event
from live_crew.orchestrator import CrewOrchestrator, LiveCrewError, RunResult

__all__ = [
    "Action",
    "CrewOrchestrator",
    "Event",
    "LiveCrewError",
    "OrchestrationResult",
    "Orchestrator",
    "RunResult",
    "event_handler",
]
