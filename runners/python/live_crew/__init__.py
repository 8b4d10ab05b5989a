"""live-crew's Python API (SPEC §11): register CrewAI crews and run them as live,
event-driven services with the ``live-crew`` host. See ``docs/CREWAI.md``."""

from live_crew.orchestrator import CrewOrchestrator, LiveCrewError, RunResult

__all__ = ["CrewOrchestrator", "LiveCrewError", "RunResult"]
