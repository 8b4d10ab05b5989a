"""``Event`` and ``Action`` of the seed prototype's API (SPEC §17), as handlers see them.

They cross the process boundary as the host's JSON (SPEC §1): an ``Event`` is built from
an event of the call, an ``Action`` a handler returns is sent as an action, and the host's
output actions come back as ``Action`` objects with the fields the host adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Generic, TypeVar

PayloadT = TypeVar("PayloadT")

DEFAULT_TTL_MS = 5_000
MAX_TTL_MS = 300_000  # the host's limit (SPEC §1)
_MAX_KIND_CHARS = 50


@dataclass(frozen=True)
class Event(Generic[PayloadT]):
    """One input event; ``ts`` is a timezone-aware ``datetime`` in UTC."""

    ts: datetime
    kind: str
    stream_id: str
    payload: PayloadT

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Event[Any]:
        return cls(_timestamp(record["ts"]), record["kind"], record["stream_id"], record["payload"])

    def to_dict(self) -> dict[str, Any]:
        """The host's form; a naive ``ts`` is taken as UTC."""
        ts = self.ts if self.ts.tzinfo else self.ts.replace(tzinfo=timezone.utc)
        return {
            "ts": ts.isoformat(),
            "kind": self.kind,
            "stream_id": self.stream_id,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Action(Generic[PayloadT]):
    """What a handler returns: ``Action.create(kind, payload)``.

    The host stamps an action with the event's stream, the end of its slice as ``ts``
    (never wall-clock time, so a replay gives the same output), the crew (the handler's
    name) and the slice; those fields are None on an action a handler creates and set on
    the actions of a run's result.
    """

    kind: str
    payload: PayloadT
    ttl_ms: int = DEFAULT_TTL_MS
    ts: datetime | None = None
    stream_id: str | None = None
    crew: str | None = None
    slice: int | None = None

    def __post_init__(self) -> None:
        # Checked here, so that a bad action fails in the handler that made it.
        kind = self.kind
        if not (
            isinstance(kind, str)
            and 0 < len(kind) <= _MAX_KIND_CHARS
            and kind.isascii()
            and kind.replace("_", "a").isalnum()
        ):
            raise ValueError(f"action kind {kind!r} must be 1 to 50 of A-Z, a-z, 0-9 and _")
        if kind.startswith("__"):
            raise ValueError(f"action kind {kind!r} is reserved: '__' kinds belong to the system")
        if type(self.ttl_ms) is not int or not 1 <= self.ttl_ms <= MAX_TTL_MS:
            raise ValueError(
                f"ttl_ms must be an integer from 1 to {MAX_TTL_MS}, got {self.ttl_ms!r}"
            )

    @classmethod
    def create(
        cls, kind: str, payload: PayloadT, *, ttl_ms: int = DEFAULT_TTL_MS
    ) -> Action[PayloadT]:
        return cls(kind, payload, ttl_ms)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Action[Any]:
        """An action of the host's output."""
        return cls(
            record["kind"],
            record["payload"],
            record["ttl_ms"],
            _timestamp(record["ts"]),
            record["stream_id"],
            record["crew"],
            record["slice"],
        )

    def to_dict(self) -> dict[str, Any]:
        """The action as a crew sends it; the host adds the other fields."""
        return {"kind": self.kind, "payload": self.payload, "ttl_ms": self.ttl_ms}


def _timestamp(text: str) -> datetime:
    """The host's RFC 3339 UTC timestamps; ``fromisoformat`` takes ``Z`` only from 3.11."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
