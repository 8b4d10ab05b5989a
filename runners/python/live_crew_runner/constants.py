"""Values the host and this runner must agree on, defined once on each side.

The host's copies are in Rust (``live_crew::protocol::PROTOCOL_VERSION``,
``live_crew::model::MAX_TTL_MS``, ``live_crew::config::OUTPUT_SUFFIX``);
``tests/shared_constants.rs`` checks that the two agree.
"""

#: The runner protocol's version (SPEC §6), sent in ``ready``.
PROTOCOL_VERSION = 1
#: Largest ``ttl_ms`` an action may have (SPEC §1).
MAX_TTL_MS = 300_000
#: What a ``crewai`` crew's name gets for its default action kind.
OUTPUT_SUFFIX = "_output"
