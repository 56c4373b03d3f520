"""The downstream simulator: a dev/test stand-in for Floodgate's LLM, embedding, rerank, search and
fetch providers, speaking their wire formats with configurable latency, rate limits, errors,
hangs and outages. Run it with ``python -m services.upstreams``; build it with :func:`create_app`.
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
from .settings import UpstreamsSettings, load_upstreams_settings

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
    "SimulatorStatistics",
    "TrafficStatistics",
    "UpstreamsSettings",
    "create_app",
    "embed",
    "load_upstreams_settings",
]
