from pathlib import Path
from hello_crews import greeter, shouter
from live_crew import CrewOrchestrator
orchestrator = CrewOrchestrator(llm="fake")
orchestrator.register_crew("greeter", greeter, triggers=["hello"])
orchestrator.register_crew("shouter", shouter, triggers=["hello"], dependencies=[("greeter", 0)])
result = orchestrator.run(Path(__file__).parents[1] / "events.jsonl")
for action in result.actions:
    print(action["slice"], action["crew"], action["payload"]["raw"])
