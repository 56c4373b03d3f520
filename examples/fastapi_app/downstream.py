"""A stand-in for the two APIs the example calls, to try it on one machine::

    uvicorn downstream:app --port 8001

``GET /search`` answers in about 50 ms, ``POST /v1/complete`` in about half a second, like the
``typical_latency`` of each in budget.toml: enough to fill the LLM gate with a few requests at once.
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI

app = FastAPI(title="example downstreams")


@app.get("/search")
async def search(q: str) -> dict[str, Any]:
    await anyio.sleep(0.05)
    return {"hits": [{"text": f"a passage about {q}"}]}


@app.post("/v1/complete")
async def complete(body: dict[str, Any]) -> dict[str, Any]:
    await anyio.sleep(0.5)
    return {"text": f"an answer to {body['prompt']!r} from {len(body['context'])} passage(s)"}
