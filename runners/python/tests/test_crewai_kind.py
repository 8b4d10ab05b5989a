"""The `crewai` and `prompt` kinds on real CrewAI with the offline `fake` LLM.

Handlers are loaded in this process (one CrewAI import for the whole module); the last
tests run real runner processes to check the protocol stream and determinism across runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("crewai", reason="the crewai kinds need the crewai package")

from conftest import FIXTURES, call_message, event  # noqa: E402
from live_crew_runner.handler import CrewError  # noqa: E402
from live_crew_runner.kinds import crewai as crewai_kind  # noqa: E402
from live_crew_runner.kinds import prompt as prompt_kind  # noqa: E402
from live_crew_runner.protocol import Hello  # noqa: E402

GOAL = event("goal_scored", {"team": "home", "minute": 23})


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """CrewAI writes settings and a kickoff database under HOME, as in the sandbox."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    monkeypatch.delenv("LIVE_CREW_LLM", raising=False)
    return home


def load(fixture: str, runner: dict[str, Any], crew: str = "reporter") -> Any:
    config = {"crew": crew, "triggers": ["*"], "runner": {"kind": "crewai", **runner}}
    hello = Hello(crew, str(FIXTURES / fixture), config, 60_000)
    return crewai_kind.load(hello)


def call(handler: Any, events: list[dict[str, Any]], context: dict[str, Any] | None = None):
    message = call_message(1, events, context or {}, {"crew:vision@-1": []})
    return handler(message)


def only_payload(outcome: Any) -> dict[str, Any]:
    actions, _ = outcome
    assert len(actions) == 1
    return actions[0]["payload"]


# --- loading ------------------------------------------------------------------------


def test_pure_yaml_crew_with_crew_yaml_pairs_tasks_with_agents_by_position():
    handler = load("crewai_yaml", {"llm": "fake"})
    payload = only_payload(call(handler, [GOAL]))
    assert [(t["name"], t["agent"]) for t in payload["tasks"]] == [
        ("analyse", "Match analyst"),  # no agent key: the agent at position 0
        ("headline", "Headline writer"),  # no agent key: the agent at position 1
        ("recap", "Match analyst"),  # named
    ]
    assert payload["tasks"][0]["raw"].endswith("Goal by home in minute 23, slice 0.")
    assert payload["raw"] == payload["tasks"][-1]["raw"]
    assert payload["raw"].endswith("Recap for match1.")


def test_yaml_in_config_folder_gives_every_task_the_only_agent():
    handler = load("crewai_config", {"llm": "fake"})
    payload = only_payload(call(handler, [GOAL], context={"score": 1}))
    assert [t["agent"] for t in payload["tasks"]] == ["Solo reporter", "Solo reporter"]
    assert payload["tasks"][1]["raw"].endswith('Second report, context {"score":1}.')


def test_crewbase_class_loads_its_config_folder_and_the_override_replaces_its_model():
    # The agent names anthropic/..., whose provider package is not installed: the
    # override must replace it before CrewAI tries to create it.
    handler = load("crewai_class", {"class": "class_crew:ReportCrew", "llm": "fake"})
    payload = only_payload(call(handler, [GOAL]))
    assert payload["tasks"] == [
        {"name": "report", "agent": "Class reporter", "raw": payload["raw"]}
    ]
    assert payload["raw"].endswith("CrewBase report: home scored.")


def test_module_attribute_crew_object_and_factory_function():
    for source in ("module_crew:crew", "module_crew:build"):
        handler = load("crewai_module", {"module": source, "llm": "fake"})
        assert only_payload(call(handler, [GOAL]))["raw"].endswith("Module report on home.")


def test_a_task_without_agent_and_no_agent_at_its_position_is_a_load_error(tmp_path: Path):
    (tmp_path / "agents.yaml").write_text(
        "a: {role: A, goal: g, backstory: b}\nb: {role: B, goal: g, backstory: b}\n"
    )
    (tmp_path / "tasks.yaml").write_text(
        "t1: {description: d, expected_output: o}\nt2: {description: d, expected_output: o}\n"
        "t3: {description: d, expected_output: o}\n"
    )
    config = {"crew": "c", "triggers": ["*"], "runner": {"kind": "crewai", "llm": "fake"}}
    with pytest.raises(CrewError, match=r"task 't3' has no 'agent'.*position \(3\)"):
        crewai_kind.load(Hello("c", str(tmp_path), config, 60_000))


def test_not_a_crew_and_no_crew_at_all_are_load_errors(tmp_path: Path):
    with pytest.raises(CrewError, match="'module_crew:nothing' gave NoneType, not a Crew"):
        crewai_kind.build_crew(str(FIXTURES / "crewai_module"), {"module": "module_crew:nothing"}, None)
    with pytest.raises(CrewError, match="no crew found"):
        crewai_kind.build_crew(str(tmp_path), {}, None)


# --- inputs -------------------------------------------------------------------------


def test_inputs_merge_trigger_payloads_and_add_the_call_as_json_text():
    late = event("goal_scored", {"team": "away", "extra": [1, 2]})
    message = call_message(7, [GOAL, late, event("frame", "not an object")], {"s": 1}, {})
    inputs = crewai_kind.kickoff_inputs(message)
    assert inputs["team"] == "away"  # later events win
    assert inputs["minute"] == 23 and inputs["extra"] == [1, 2]
    assert json.loads(inputs["events"]) == message["events"]
    assert json.loads(inputs["context"]) == {"s": 1}
    assert json.loads(inputs["deps"]) == {}
    assert (inputs["slice"], inputs["stream_id"]) == (0, "match1")


def test_a_missing_template_variable_fails_the_call_naming_variable_and_task():
    handler = load("crewai_yaml", {"llm": "fake"})
    with pytest.raises(CrewError) as failure:
        call(handler, [event("goal_scored", {"team": "home"})])
    message = str(failure.value)
    assert "task 'analyse'" in message and "'{minute}'" in message, message
    # The crew stays usable for the next call.
    assert only_payload(call(handler, [GOAL]))["raw"]


# --- output -------------------------------------------------------------------------


def test_output_kind_defaults_to_crew_output_and_context_key_stores_raw():
    handler = load("crewai_config", {"llm": "fake"}, crew="desk")
    actions, patch = call(handler, [GOAL])
    assert actions[0]["kind"] == "desk_output" and patch == {}
    handler = load(
        "crewai_config", {"llm": "fake", "output": {"kind": "line", "context_key": "last"}}
    )
    actions, patch = call(handler, [GOAL])
    assert actions[0]["kind"] == "line"
    assert patch == {"last": actions[0]["payload"]["raw"]}
    assert actions[0]["payload"]["json"] is None


def test_json_output_with_actions_and_context_patch_is_passed_through():
    handler = load("crewai_passthrough", {"llm": "fake", "output": {"context_key": "raw"}})
    actions, patch = call(handler, [GOAL])
    assert actions == [{"kind": "goal_alert", "payload": {"team": "home"}}]
    assert patch["last_team"] == "home"
    assert json.loads(patch["raw"])["context_patch"] == {"last_team": "home"}


def test_fenced_json_is_read_and_plain_text_is_not():
    fenced = '```json\n{"actions": []}\n```'
    assert crewai_kind.json_object(fenced) == {"actions": []}
    assert crewai_kind.json_object("[1, 2]") is None
    assert crewai_kind.json_object("GOAL {team}") is None


# --- failures -----------------------------------------------------------------------


def test_a_crew_raising_inside_crewai_fails_only_that_call():
    handler = load("crewai_module", {"module": "module_crew:build", "llm": "fake"})
    with pytest.raises(CrewError, match="RuntimeError: the boom callback exploded"):
        call(handler, [event("goal_scored", {"team": "boom"})])
    assert only_payload(call(handler, [GOAL]))["raw"].endswith("Module report on home.")


# --- fake LLM -----------------------------------------------------------------------


def test_fake_llm_is_deterministic_and_prompt_dependent():
    from live_crew_runner.fake_llm import answer

    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert answer(messages, "Describe it.") == answer(messages, "Describe it.")
    assert answer(messages, "Describe it.").endswith("] Describe it.")
    other = [{"role": "system", "content": "t"}, {"role": "user", "content": "u"}]
    assert answer(other, "Describe it.") != answer(messages, "Describe it.")
    assert answer(messages, None).endswith("] u")
    assert answer(messages, ' {"a": 1} ') == '{"a": 1}'


def test_a_real_model_string_gives_every_agent_the_hosts_gateway_without_calling_it():
    handler = load("crewai_yaml", {"llm": "openai/gpt-4o-mini"})
    agents = handler._crew.agents
    assert len(agents) == 2
    assert {(agent.llm.model, type(agent.llm).__name__) for agent in agents} == {
        ("openai/gpt-4o-mini", "GatewayLLM")
    }


def test_agents_naming_their_own_model_ask_it_through_the_gateway(tmp_path: Path):
    (tmp_path / "agents.yaml").write_text(
        "writer:\n  role: Writer\n  goal: Write\n  backstory: B.\n  llm: openai/gpt-4o-mini\n"
        "editor:\n  role: Editor\n  goal: Edit\n  backstory: B.\n"
    )
    (tmp_path / "tasks.yaml").write_text(
        "draft:\n  description: Draft.\n  expected_output: Text.\n  agent: writer\n"
        "edit:\n  description: Edit.\n  expected_output: Text.\n  agent: editor\n"
    )
    config = {"crew": "desk", "triggers": ["*"], "runner": {"kind": "crewai"}}
    handler = crewai_kind.load(Hello("desk", str(tmp_path), config, 60_000))
    models = {agent.role: (type(agent.llm).__name__, agent.llm.model) for agent in handler._crew.agents}
    assert models["Writer"] == ("GatewayLLM", "openai/gpt-4o-mini")
    # CrewAI's default model for an agent without one goes through the gateway as well.
    assert models["Editor"][0] == "GatewayLLM" and models["Editor"][1].startswith("openai/")


def test_llm_env_overrides_runner_llm(monkeypatch: pytest.MonkeyPatch):
    from live_crew_runner.crewai_setup import llm_model

    assert llm_model({"llm": "openai/gpt-4o-mini"}) == "openai/gpt-4o-mini"
    monkeypatch.setenv("LIVE_CREW_LLM", "fake")
    assert llm_model({"llm": "openai/gpt-4o-mini"}) == "fake"
    monkeypatch.delenv("LIVE_CREW_LLM")
    with pytest.raises(CrewError, match="runner.llm"):
        llm_model({"llm": 3})


# --- prompt kind --------------------------------------------------------------------

PROMPT = {
    "kind": "prompt",
    "llm": "fake",
    "system_prompt": "You keep score.",
    "user_template": "{{ events[-1].payload.team }} scored; score {{ ctx.score | tojson }}",
    "patch_template": '{"score": {{ ctx.score + 1 }}, "said": {{ generated | tojson }}}',
    "outputs": [{"kind": "line", "payload": {"text": "{{ generated }}", "n": 1}}],
}


def load_prompt(runner: dict[str, Any]) -> Any:
    config = {"crew": "scorer", "triggers": ["*"], "runner": runner}
    return prompt_kind.load(Hello("scorer", str(FIXTURES), config, 60_000))


def test_prompt_crew_renders_templates_calls_the_llm_and_patches():
    handler = load_prompt(PROMPT)
    actions, patch = call(handler, [GOAL], context={"score": 2})
    text = actions[0]["payload"]["text"]
    assert text.endswith("] home scored; score 2") and text.startswith("[fake ")
    assert actions[0]["payload"]["n"] == 1
    assert patch == {"score": 3, "said": text}
    assert call(handler, [GOAL], context={"score": 2}) == (actions, patch)  # deterministic


def test_prompt_crew_names_missing_variables_and_bad_templates():
    handler = load_prompt(PROMPT)
    with pytest.raises(CrewError, match="UndefinedError: 'dict object' has no attribute 'score'"):
        call(handler, [GOAL], context={})
    with pytest.raises(CrewError, match=r"runner.user_template: line 1"):
        load_prompt({**PROMPT, "user_template": "{{ unclosed"})
    with pytest.raises(CrewError, match="runner.outputs"):
        load_prompt({**PROMPT, "outputs": []})


# --- real runner processes ----------------------------------------------------------


def start_crewai_runner(spawn: Any, fixture: str, runner: dict[str, Any]) -> Any:
    process = spawn(FIXTURES / fixture)
    config = {"crew": "desk", "triggers": ["*"], "runner": {"kind": "crewai", **runner}}
    hello = {
        "type": "hello",
        "protocol": 1,
        "crew": "desk",
        "crew_dir": str(FIXTURES / fixture),
        "config": config,
        "heartbeat_ms": 60_000,
    }
    process.send(hello)
    assert process.recv(timeout=120)["type"] == "ready"
    return process


def test_runner_keeps_crewai_console_output_off_the_protocol_and_is_deterministic(spawn):
    replies = []
    for _ in range(2):
        runner = start_crewai_runner(spawn, "crewai_yaml", {"llm": "fake"})
        runner.send(call_message(1, [GOAL], {}, {}))
        replies.append(runner.recv(timeout=60))
        runner.close_stdin()
        assert runner.wait(timeout=30) == 0
        # verbose: true in crew.yaml; all of it goes to stderr.
        assert "Match analyst" in runner.wait_for_stderr("Match analyst")
        for line in runner.stdout_lines:
            assert json.loads(line)["type"] in ("ready", "result", "heartbeat")
    assert replies[0]["type"] == "result", replies[0]
    assert replies[0] == replies[1]
