"""The downstream simulator: a dev/test stand-in for Floodgate's LLM, embedding, rerank, search and
fetch providers, speaking their wire formats with configurable latency, rate limits, errors,
hangs and outages. Run it with ``python -m services.simulator``; build it with :func:`create_app`.
"""

from ._behaviour import (
    APIS,
    ApiBehaviour,
    ApiStatistics,
    Behaviour,
    BehaviourError,
    Latency,
    SimulatedRateLimit,
    Simulator,
    SimulatorStatistics,
    TrafficStatistics,
)
from ._chat import TASKS
from ._corpus import CORPUS_BASE_URL
from ._embedding import DEFAULT_DIMENSIONS, embed
from .app import create_app
from .settings import SimulatorSettings, load_simulator_settings

__all__ = [
    "APIS",
    "CORPUS_BASE_URL",
    "DEFAULT_DIMENSIONS",
    "TASKS",
    "ApiBehaviour",
    "ApiStatistics",
    "Behaviour",
    "BehaviourError",
    "Latency",
    "SimulatedRateLimit",
    "Simulator",
    "SimulatorSettings",
    "SimulatorStatistics",
    "TrafficStatistics",
    "create_app",
    "embed",
    "load_simulator_settings",
]
