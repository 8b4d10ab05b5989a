"""Two ordinary CrewAI crews, built by factory functions: nothing here knows live-crew."""

from crewai import Agent, Crew, Task


def greeter() -> Crew:
    host = Agent(role="Host", goal="Greet every guest by name", backstory="You run the door.")
    greet = Task(description="Greet {name} warmly.", expected_output="A greeting.", agent=host)
    return Crew(agents=[host], tasks=[greet])


def shouter() -> Crew:
    crier = Agent(role="Town crier", goal="Repeat greetings", backstory="The loudest voice.")
    shout = Task(description="Shout the greeting for {name}.", expected_output="Capitals.", agent=crier)
    return Crew(agents=[crier], tasks=[shout])
