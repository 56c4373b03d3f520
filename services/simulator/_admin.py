"""Run-time control of the simulator (blueprint ``simulator_admin``).

``GET /admin/behaviour``   the current behaviour of every API
``PUT /admin/behaviour``   merge a partial behaviour (all or nothing; 400 names the bad key)
``POST /admin/reset``      start-up behaviour back, random streams re-seeded, statistics cleared
``GET /admin/stats``       per API and per key: requests, statuses, current and peak concurrency
"""

from __future__ import annotations

import json

from chassis import ApiError
from quart import Blueprint, Response, jsonify, request

from ._behaviour import BehaviourError
from ._exchange import simulator_state

__all__ = ["simulator_admin"]

simulator_admin = Blueprint("simulator_admin", __name__)


@simulator_admin.get("/admin/behaviour")
async def get_behaviour() -> Response:
    return jsonify(simulator_state().simulator.behaviour.to_dict())


@simulator_admin.put("/admin/behaviour")
async def put_behaviour() -> Response:
    raw = await request.get_data(cache=True)
    try:
        patch = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None
    try:
        behaviour = simulator_state().simulator.update(patch)
    except BehaviourError as exc:
        raise ApiError(400, "invalid_behaviour", str(exc)) from None
    return jsonify(behaviour.to_dict())


@simulator_admin.post("/admin/reset")
async def reset() -> Response:
    simulator = simulator_state().simulator
    simulator.reset()
    return jsonify({"status": "reset", "behaviour": simulator.behaviour.to_dict()})


@simulator_admin.get("/admin/stats")
async def stats() -> Response:
    return jsonify(simulator_state().simulator.statistics().to_dict())
