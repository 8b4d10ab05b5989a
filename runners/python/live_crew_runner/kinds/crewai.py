"""The ``crewai`` kind: a standard CrewAI crew from the crew folder, unchanged (SPEC §10).

Where the crew comes from, first match wins:

- ``runner.class`` or ``runner.module``, as ``module:attr``: a ``@CrewBase`` class, a
  ``Crew``, or a function returning either; the module is a file in the crew folder (or
  its ``src/``, or a ``runner.pythonpath`` folder). A ``@CrewBase`` class finds
  ``config/agents.yaml`` and ``config/tasks.yaml`` beside its module, as CrewAI does.
- Otherwise ``agents.yaml`` + ``tasks.yaml`` (+ optional ``crew.yaml`` with ``Crew``
  fields such as ``process``), beside the runtime file or in ``config/``. A task without
  an ``agent`` key gets the agent at its own position, or the only agent.

The crew is built once, when the runner starts, and kicked off once per call.
"""

from __future__ import annotations

import os
import re
import sys

from live_crew_runner.constants import OUTPUT_SUFFIX
from live_crew_runner.crewai_setup import (
    import_crewai,
    llm_model,
    make_llm,
    print_traceback,
    through_gateway,
)
from live_crew_runner.handler import CrewError, check_actions, describe
from live_crew_runner.protocol import dumps

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from crewai import Crew
    from crewai.llms.base_llm import BaseLLM

    from live_crew_runner.handler import Handler, Outcome
    from live_crew_runner.protocol import Call, Hello

#: CrewAI's own placeholder pattern (``crewai.utilities.string_utils``): ``{name}`` only,
#: so JSON braces in a description are left alone.
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)}")
_CREW_FAILURES = (Exception, SystemExit)


def load(hello: Hello) -> Handler:
    import_crewai()
    runner = hello.config["runner"]
    model = llm_model(runner)
    llm = make_llm(model) if model else None
    crew = build_crew(hello.crew_dir, runner, llm)
    if llm is not None:
        override_llms(crew, llm)
    else:
        route_through_gateway(crew)
    output = runner.get("output") or {}
    return CrewAIHandler(
        crew,
        output_kind=output.get("kind") or f"{hello.crew}{OUTPUT_SUFFIX}",
        context_key=output.get("context_key"),
    )


def build_crew(crew_dir: str, runner: dict[str, Any], llm: BaseLLM | None) -> Crew:
    """The crew object, by the load order in the module docstring."""
    source = runner.get("class") or runner.get("module")
    if source is None:
        return crew_from_yaml(crew_dir, llm)
    if not isinstance(source, str) or ":" not in source:
        raise CrewError(f"runner.class/module must be 'module:attr', got {source!r}")
    extra = runner.get("pythonpath") or []  # the Python API's: the user's project
    for folder in (*reversed(extra), os.path.join(crew_dir, "src"), crew_dir):
        if isinstance(folder, str) and os.path.isdir(folder) and folder not in sys.path:
            sys.path.insert(0, folder)
    module_name, _, attr = source.partition(":")
    try:
        __import__(module_name)
        target = getattr(sys.modules[module_name], attr)
    except _CREW_FAILURES as exc:
        print_traceback(exc)
        raise CrewError(f"cannot load '{source}': {describe(exc)}") from None
    try:
        return crew_from_object(target, source, llm)
    except CrewError:
        raise
    except _CREW_FAILURES as exc:
        print_traceback(exc)
        raise CrewError(f"building the crew from '{source}' raised {describe(exc)}") from None


def crew_from_object(target: Any, source: str, llm: BaseLLM | None) -> Crew:
    """A ``Crew``; or a ``@CrewBase`` class or factory that yields one."""
    from crewai import Crew

    if isinstance(target, Crew):
        made = target
    elif not callable(target):
        made = target  # reported below
    elif llm is not None and isinstance(target, type) and hasattr(target, "load_configurations"):
        made = _crewbase_without_models(target)
    else:
        made = target()
    if not isinstance(made, Crew) and callable(getattr(made, "crew", None)):
        made = made.crew()  # a @CrewBase instance: its @crew method builds the Crew
    if not isinstance(made, Crew):
        raise CrewError(
            f"'{source}' gave {type(made).__name__}, not a Crew; name a Crew, a @CrewBase "
            "class, or a function returning a Crew"
        )
    return made


def _crewbase_without_models(crew_class: type) -> Any:
    """An instance of a ``@CrewBase`` class whose agents are built without their ``llm``.

    CrewBase builds the agents while the instance is created, from ``agents_config``; a
    model named there would be created (and its provider package may not even be
    installed) only to be overridden. Dropping it from the loaded settings gives each
    agent CrewAI's default model object, which the override then replaces.
    """
    load_configurations = crew_class.load_configurations  # type: ignore[attr-defined]

    def load_without_models(instance: Any) -> None:
        load_configurations(instance)
        for settings in instance.agents_config.values():
            if isinstance(settings, dict):
                settings.pop("llm", None)
                settings.pop("function_calling_llm", None)

    crew_class.load_configurations = load_without_models  # type: ignore[attr-defined]
    try:
        return crew_class()
    finally:
        crew_class.load_configurations = load_configurations  # type: ignore[attr-defined]


def crew_from_yaml(crew_dir: str, llm: BaseLLM | None) -> Crew:
    """Agents, tasks and crew settings from ``agents.yaml``/``tasks.yaml``/``crew.yaml``."""
    folder = next(
        (
            path
            for path in (crew_dir, os.path.join(crew_dir, "config"))
            if os.path.isfile(os.path.join(path, "agents.yaml"))
        ),
        None,
    )
    if folder is None:
        raise CrewError(
            "no crew found: set runner.class or runner.module, or put agents.yaml and "
            "tasks.yaml beside the runtime file or in config/"
        )
    where = "config/" if folder != crew_dir else ""
    agents_config = _yaml_mapping(folder, "agents.yaml", where, required=True)
    tasks_config = _yaml_mapping(folder, "tasks.yaml", where, required=True)
    crew_config = _yaml_mapping(folder, "crew.yaml", where, required=False)
    from crewai import Agent, Crew, Task

    agents: dict[str, Agent] = {}
    for name, fields in agents_config.items():
        settings = dict(_fields(fields, f"{where}agents.yaml", name))
        if llm is not None:
            settings["llm"] = llm
        agents[name] = _build(Agent, settings, f"{where}agents.yaml: agent '{name}'")
    tasks: dict[str, Task] = {}
    for index, (name, fields) in enumerate(tasks_config.items()):
        settings = dict(_fields(fields, f"{where}tasks.yaml", name))
        settings["agent"] = _task_agent(name, index, settings.get("agent"), agents, where)
        settings["context"] = [
            _earlier_task(name, other, tasks, where) for other in settings.get("context") or []
        ]
        settings.setdefault("name", name)
        tasks[name] = _build(Task, settings, f"{where}tasks.yaml: task '{name}'")
    if llm is not None and crew_config.get("process") == "hierarchical":
        crew_config.setdefault("manager_llm", llm)
    return _build(
        Crew,
        {**crew_config, "agents": list(agents.values()), "tasks": list(tasks.values())},
        f"{where}crew.yaml",
    )


def _yaml_mapping(folder: str, name: str, where: str, required: bool) -> dict[str, Any]:
    import yaml  # a CrewAI dependency

    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if required:
            raise CrewError(f"{where}{name} is missing; it goes beside {where}agents.yaml")
        return {}
    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as exc:
        raise CrewError(f"{where}{name}: {exc}") from None
    if data is None and not required:
        return {}
    if not isinstance(data, dict) or (required and not data):
        raise CrewError(f"{where}{name} must be a mapping of names to settings")
    return data


def _fields(fields: Any, file: str, name: str) -> dict[str, Any]:
    if not isinstance(fields, dict):
        raise CrewError(f"{file}: '{name}' must be a mapping of settings")
    return fields


def _task_agent(task: str, index: int, named: Any, agents: dict[str, Any], where: str) -> Any:
    """The task's ``agent`` by name; else the agent at its position, or the only agent."""
    if named is not None:
        if named not in agents:
            known = ", ".join(agents)
            raise CrewError(
                f"{where}tasks.yaml: task '{task}' names agent '{named}', "
                f"which is not in agents.yaml (agents: {known})"
            )
        return agents[named]
    ordered = list(agents.values())
    if len(ordered) == 1:
        return ordered[0]
    if index < len(ordered):
        return ordered[index]
    raise CrewError(
        f"{where}tasks.yaml: task '{task}' has no 'agent', and there is no agent at its "
        f"position ({index + 1}) among the {len(ordered)} agents; add 'agent: <name>'"
    )


def _earlier_task(task: str, other: Any, tasks: dict[str, Any], where: str) -> Any:
    if other not in tasks:
        raise CrewError(
            f"{where}tasks.yaml: task '{task}' has context '{other}', which is not a task "
            "defined before it"
        )
    return tasks[other]


def _build(model: Any, settings: dict[str, Any], label: str) -> Any:
    try:
        return model(**settings)
    except _CREW_FAILURES as exc:
        raise CrewError(f"{label}: {describe(exc)}") from None


def _agents(crew: Crew) -> list[Any]:
    agents = list(crew.agents) + [task.agent for task in crew.tasks if task.agent is not None]
    if crew.manager_agent is not None:
        agents.append(crew.manager_agent)
    return agents


def route_through_gateway(crew: Crew) -> None:
    """Agents whose model object was made before CrewAI's ``create_llm`` went through
    the gateway (built in Python with ``LLM(...)``) ask it through the host's LLM
    gateway as well (SPEC section 14)."""
    for agent in _agents(crew):
        agent.llm = through_gateway(agent.llm)
        if agent.function_calling_llm is not None:
            agent.function_calling_llm = through_gateway(agent.function_calling_llm)


def override_llms(crew: Crew, llm: BaseLLM) -> None:
    """Every LLM the crew would call becomes ``llm``: agents', the manager's, planning."""
    for agent in _agents(crew):
        agent.llm = llm
        if agent.function_calling_llm is not None:
            agent.function_calling_llm = llm
    for field in ("manager_llm", "function_calling_llm", "planning_llm"):
        if getattr(crew, field, None) is not None:
            setattr(crew, field, llm)


class CrewAIHandler:
    """Kicks the crew off once per call and turns its output into actions."""

    def __init__(self, crew: Crew, output_kind: str, context_key: str | None) -> None:
        self._crew = crew
        self._output_kind = output_kind
        self._context_key = context_key
        self._templates = _templates(crew)

    def __call__(self, call: Call) -> Outcome:
        inputs = kickoff_inputs(call)
        self._check_variables(inputs)
        try:
            output = self._crew.kickoff(inputs=inputs)
        except _CREW_FAILURES as exc:
            print_traceback(exc)
            raise CrewError(f"the CrewAI kickoff raised {describe(exc)}") from None
        return self._outcome(output)

    def _check_variables(self, inputs: dict[str, Any]) -> None:
        for label, variables in self._templates:
            for variable in variables:
                if variable not in inputs:
                    given = ", ".join(sorted(inputs))
                    raise CrewError(
                        f"{label} uses the template variable '{{{variable}}}', which is not "
                        f"in the inputs ({given}); send it in a trigger event's payload"
                    )

    def _outcome(self, output: Any) -> Outcome:
        raw = str(output.raw)
        parsed = output.json_dict or json_object(raw)
        actions: Any = None
        patch: Any = None
        if parsed is not None:
            actions = parsed.get("actions")
            patch = parsed.get("context_patch")
            if patch is not None and not isinstance(patch, dict):
                raise CrewError("the crew's 'context_patch' must be a JSON object")
        if actions is None:
            tasks = [
                {"name": task.name, "agent": (task.agent or "").strip(), "raw": str(task.raw)}
                for task in output.tasks_output
            ]
            payload = {"raw": raw, "json": parsed, "tasks": tasks}
            actions = [{"kind": self._output_kind, "payload": payload}]
        patch = dict(patch or {})
        if self._context_key:
            patch[self._context_key] = raw
        return check_actions(actions, "the crew"), patch


def kickoff_inputs(call: Call) -> dict[str, Any]:
    """The trigger events' object payloads merged (later wins), then the system inputs."""
    inputs: dict[str, Any] = {}
    for event in call["events"]:
        payload = event.get("payload")
        if isinstance(payload, dict):
            inputs.update(payload)
    inputs["events"] = dumps(call["events"])
    inputs["context"] = dumps(call["context"])
    inputs["deps"] = dumps(call["deps"])
    inputs["slice"] = call["slice"]
    inputs["stream_id"] = call["stream_id"]
    return inputs


def _templates(crew: Crew) -> list[tuple[str, list[str]]]:
    """Each task's and agent's placeholders, read once before the first kickoff."""
    found: list[tuple[str, list[str]]] = []
    for task in crew.tasks:
        name = task.name or task.description[:40]
        text = f"{task.description}\n{task.expected_output}"
        found.append((f"task '{name}'", _VARIABLE.findall(text)))
    for agent in crew.agents:
        text = f"{agent.role}\n{agent.goal}\n{agent.backstory}"
        found.append((f"agent '{agent.role.strip()}'", _VARIABLE.findall(text)))
    return [(label, variables) for label, variables in found if variables]


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object, also inside a Markdown code fence; else None."""
    import json

    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0].strip()
    if not body.startswith("{"):
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
