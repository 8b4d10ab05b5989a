"""A standard CrewAI project crew: @CrewBase with config/agents.yaml and config/tasks.yaml."""

from crewai import Agent, Crew, Process, Task
from crewai.project import CrewBase, agent, crew, task


@CrewBase
class CommentaryCrew:
    agents_config = "config/agents.yaml"
    tasks_config = "config/tasks.yaml"

    @agent
    def commentator(self) -> Agent:
        return Agent(config=self.agents_config["commentator"])

    @task
    def goal_line(self) -> Task:
        return Task(config=self.tasks_config["goal_line"])

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks, process=Process.sequential)
