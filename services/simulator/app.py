"""The downstream simulator's app factory: one place that wires settings, state and routes.

A dev/test stand-in for the providers Floodgate calls (LLM, embeddings, reranker, web search,
fetch). It speaks their wire formats and reproduces what they do under load: latency, provider
rate limits (429 + ``Retry-After``), errors, hangs and outages, changeable at run time.
"""

from __future__ import annotations

import chassis
from quart_trio import QuartTrio

from ._admin import simulator_admin
from ._api import simulator_api
from ._behaviour import Simulator
from ._corpus import corpus
from ._exchange import SimulatorState
from .settings import SimulatorSettings

__all__ = ["SERVICE_NAME", "create_app"]

SERVICE_NAME = "simulator"


def create_app(settings: SimulatorSettings | None = None) -> QuartTrio:
    """A chassis app (``/healthz``, ``/readyz``, ``/metrics``, JSON errors) with the simulated APIs."""
    settings = settings if settings is not None else SimulatorSettings()
    app = chassis.create_app(SERVICE_NAME, max_body_bytes=settings.max_body_bytes)
    app.extensions["simulator"] = SimulatorState(
        simulator=Simulator(settings.behaviour, seed=settings.seed), corpus=corpus()
    )
    app.register_blueprint(simulator_api)
    app.register_blueprint(simulator_admin)
    return app
