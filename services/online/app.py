"""The online service's app factory: shadowHunter, nexusAssess and dealBrain behind one chassis app."""

from __future__ import annotations

from quart_trio import QuartTrio

import chassis

from .settings import OnlineSettings

__all__ = ["create_app"]


def create_app(settings: OnlineSettings) -> QuartTrio:
    app = chassis.create_app("online", max_body_bytes=settings.max_body_bytes)
    return app
