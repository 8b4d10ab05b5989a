"""The ``prompt`` kind: a crew that is one LLM call, written in YAML only (SPEC §10).

``runner.system_prompt`` and ``runner.user_template`` are Jinja templates over ``events``,
``ctx``, ``deps``, ``slice`` and ``stream_id``; their text goes to the model through
CrewAI's ``LLM`` (or the fake), once per call. The answer is ``generated``, and every
string in ``runner.outputs[].payload`` and the optional ``runner.patch_template`` (which
must render to a JSON object) is a template that may use it. A variable the templates use
but the call lacks fails the call and names the variable.
"""

from __future__ import annotations

import json

from live_crew_runner.crewai_setup import import_crewai, llm_model, make_llm, print_traceback
from live_crew_runner.handler import CrewError, check_actions, describe

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from crewai.llms.base_llm import BaseLLM
    from jinja2 import Template

    from live_crew_runner.handler import Handler, Outcome
    from live_crew_runner.protocol import Call, Hello


def load(hello: Hello) -> Handler:
    import_crewai()
    runner = hello.config["runner"]
    model = llm_model(runner)
    if model is None:
        raise CrewError("a prompt crew needs runner.llm (or LIVE_CREW_LLM), e.g. 'fake'")
    import jinja2  # a CrewAI dependency

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    environment.policies["json.dumps_function"] = _dumps_strictly

    def compile_template(field: str, text: Any) -> Template:
        if not isinstance(text, str):
            raise CrewError(f"runner.{field} must be a string template")
        try:
            return environment.from_string(text)
        except jinja2.TemplateSyntaxError as exc:
            raise CrewError(f"runner.{field}: line {exc.lineno}: {exc.message}") from None

    system = compile_template("system_prompt", runner.get("system_prompt", ""))
    user = compile_template("user_template", runner.get("user_template"))
    patch_text = runner.get("patch_template")
    patch = compile_template("patch_template", patch_text) if patch_text is not None else None
    outputs = runner.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise CrewError("runner.outputs must be a list of {kind, payload}")
    compiled = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("kind"), str):
            raise CrewError(f"runner.outputs[{index}] needs a string 'kind'")
        payload = _compile_payload(output.get("payload"), f"outputs[{index}].payload", compile_template)
        compiled.append((output["kind"], payload))
    return PromptHandler(make_llm(model), system, user, patch, compiled)


def _dumps_strictly(value: Any, **kwargs: Any) -> str:
    """``tojson`` that names a missing variable instead of failing on its placeholder."""
    import jinja2

    def default(item: Any) -> Any:
        if isinstance(item, jinja2.Undefined):
            item._fail_with_undefined_error()
        raise TypeError(f"{type(item).__name__} is not JSON")

    return json.dumps(value, default=default, **kwargs)


def _compile_payload(value: Any, field: str, compile_template: Any) -> Any:
    """The payload with every string replaced by its compiled template."""
    if isinstance(value, str):
        return compile_template(field, value)
    if isinstance(value, dict):
        return {k: _compile_payload(v, f"{field}.{k}", compile_template) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_payload(v, f"{field}[{i}]", compile_template) for i, v in enumerate(value)]
    return value


def _render_payload(value: Any, variables: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _render_payload(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_payload(v, variables) for v in value]
    if hasattr(value, "render"):
        return value.render(variables)
    return value


class PromptHandler:
    def __init__(
        self,
        llm: BaseLLM,
        system: Template,
        user: Template,
        patch: Template | None,
        outputs: list[tuple[str, Any]],
    ) -> None:
        self._llm = llm
        self._system = system
        self._user = user
        self._patch = patch
        self._outputs = outputs

    def __call__(self, call: Call) -> Outcome:
        import jinja2

        variables: dict[str, Any] = {
            "events": call["events"],
            "ctx": call["context"],
            "deps": call["deps"],
            "slice": call["slice"],
            "stream_id": call["stream_id"],
        }
        try:
            messages = [
                {"role": "system", "content": self._system.render(variables)},
                {"role": "user", "content": self._user.render(variables)},
            ]
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise CrewError(f"the prompt templates failed: {describe(exc)}") from None
        if not messages[0]["content"]:
            messages.pop(0)
        try:
            generated = self._llm.call(messages)
        except Exception as exc:
            print_traceback(exc)
            raise CrewError(f"the LLM call raised {describe(exc)}") from None
        variables["generated"] = str(generated)
        try:
            actions = [
                {"kind": kind, "payload": _render_payload(payload, variables)}
                for kind, payload in self._outputs
            ]
            patch_text = self._patch.render(variables).strip() if self._patch else ""
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            raise CrewError(f"the output templates failed: {describe(exc)}") from None
        patch: Any = {}
        if patch_text:
            try:
                patch = json.loads(patch_text)
            except ValueError as exc:
                raise CrewError(f"runner.patch_template did not render JSON ({exc})") from None
            if not isinstance(patch, dict):
                raise CrewError("runner.patch_template must render a JSON object")
        return check_actions(actions, "the prompt crew"), patch
