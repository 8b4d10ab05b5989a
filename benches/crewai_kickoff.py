"""In-process baseline for `cargo bench --bench crewai`: CrewAI's own kickoff time for
the benchmark crew, built as the bundled runner builds it, with the same inputs.

Usage: crewai_kickoff.py CREW_DIR WARMUP COUNT; prints one duration in seconds per line.
"""

import sys
import time

from live_crew_runner.crewai_setup import import_crewai, make_llm
from live_crew_runner.kinds.crewai import build_crew, kickoff_inputs

crew_dir, warmup, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import_crewai()
crew = build_crew(crew_dir, {}, make_llm("fake"))
call = {
    "events": [{"ts": "2025-06-01T18:00:01.734000Z", "kind": "goal_scored",
                "stream_id": "match-1", "payload": {"team": "home", "minute": 23}}],
    "context": {}, "deps": {}, "slice": 3, "stream_id": "match-1",
}
for i in range(warmup + count):
    started = time.perf_counter()
    crew.kickoff(inputs=kickoff_inputs(call))
    if i >= warmup:
        print(time.perf_counter() - started)
