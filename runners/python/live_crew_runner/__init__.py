"""The bundled live-crew runner: runs a crew's Python code behind runner protocol v1.

The host starts it as ``python3 -m live_crew_runner``, or as ``python3 -c "from
live_crew_runner.serve import main; main()"`` (which skips importing ``runpy``), with
``PYTHONPATH`` pointing at the folder that holds this package. See ``docs/PROTOCOL.md``
for the wire protocol and ``runners/python/README.md`` for what crew code sees.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

#: Sent in the ``ready`` message so host logs show which runner a crew is using.
RUNNER_ID = f"live-crew-python/{__version__}"

_call_id: str | None = None
#: The protocol channel of a running runner (``serve.main``), for the LLM gateway.
_channel: Any = None


def call_id() -> str | None:
    """The id of the call the crew is answering: ``<stream>:<slice>:<crew>``, the same
    for every run of that slice by this crew, on any host and after any restart. A crew
    that calls an external system passes it as an idempotency key, since a crew may run
    twice for one call (SPEC section 12). None outside a call."""
    return _call_id
