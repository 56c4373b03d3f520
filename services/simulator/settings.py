"""The simulator's settings, read once from ``SIMULATOR_*`` environment variables.

=====================  ============  ==========================================================
variable               default       meaning
=====================  ============  ==========================================================
SIMULATOR_HOST         127.0.0.1     interface to listen on
SIMULATOR_PORT         8090          port to listen on
SIMULATOR_SEED         42            seed of the per-API random streams (latency, errors, hangs)
SIMULATOR_BEHAVIOUR    (none)        path to a JSON or TOML file with the start-up behaviour
SIMULATOR_GRACE_PERIOD 10            seconds to finish in-flight requests on SIGTERM
SIMULATOR_LOG_FORMAT   auto          auto / json / console
SIMULATOR_LOG_LEVEL    info          debug / info / warning / error
SIMULATOR_MAX_BODY_BYTES 16777216    largest request body accepted (413 above)
SIMULATOR_NICE         0             CPU priority change at start (os.nice; below 0 needs root)
=====================  ============  ==========================================================

The behaviour file has the shape ``PUT /admin/behaviour`` takes (see ``_behaviour.py``); an
invalid file stops start-up with a message naming the variable and the offending key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chassis import BaseServiceSettings, load_settings
from pydantic import ConfigDict, Field, field_validator

from ._behaviour import Behaviour, BehaviourError

__all__ = ["ENV_PREFIX", "SimulatorSettings", "load_behaviour_file", "load_simulator_settings"]

ENV_PREFIX = "SIMULATOR_"


class SimulatorSettings(BaseServiceSettings):
    """Settings of one simulator process. ``behaviour`` takes a ``Behaviour``, a mapping, or a file path."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    port: int = Field(default=8090, ge=0, le=65535)
    seed: int = 42
    # Embedding batches and rerank candidate lists are bigger than the chassis's 1 MiB default.
    max_body_bytes: int = Field(default=16 * 1_048_576, gt=0)
    behaviour: Behaviour = Field(default_factory=Behaviour)
    #: the process's CPU priority change at start-up (os.nice): the simulator stands in for providers
    #: that run on machines of their own; on cores shared with the system under test, a negative value
    #: keeps its CPU from coming out of the system's share (below 0 needs root)
    nice: int = Field(default=0, ge=-20, le=19)

    @field_validator("behaviour", mode="before")
    @classmethod
    def _read_behaviour(cls, value: Any) -> Behaviour:
        try:
            if isinstance(value, Behaviour):
                return value
            if isinstance(value, str | Path):
                return load_behaviour_file(Path(value))
            return Behaviour.from_mapping(value)
        except BehaviourError as exc:
            # pydantic turns ValueError into a validation error; the chassis names the variable.
            raise ValueError(str(exc)) from None


def load_behaviour_file(path: Path) -> Behaviour:
    """Read a JSON (``.json``) or TOML (any other suffix) behaviour file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BehaviourError(f"cannot read behaviour file {str(path)!r}: {exc.strerror}") from None
    try:
        data: Mapping[str, Any] = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BehaviourError(f"behaviour file {str(path)!r} does not parse: {exc}") from None
    return Behaviour.from_mapping(data)


def load_simulator_settings(environ: Mapping[str, str] | None = None) -> SimulatorSettings:
    """Settings from the environment; raises ``chassis.SettingsError`` naming the bad variable."""
    return load_settings(SimulatorSettings, ENV_PREFIX, environ)
