"""A stand-in upstream for the gateway tests and benchmark: ``python -m harness.upstream PORT``.

Envoy's behaviour (auth, limits, breakers, ejection, timeouts) is what they measure, so the
upstream only needs to be controllable: it echoes what it received as JSON (method, path, headers,
body size, its own name), and it can be made slow or failing through its environment
(``UPSTREAM_SLEEP_MS``, ``UPSTREAM_STATUS``) or per request (``x-test-sleep-ms``, ``x-test-status``),
and answer as if its request had used LLM tokens (``x-test-usage-tokens``, ``x-test-usage-cost-micros``:
returned as the online service's ``x-floodgate-usage-*`` headers, for the gateway's token budgets).
``/healthz`` always answers 200, so a failing instance stays "healthy" and only outlier detection
can eject it. A raw ASGI app on hypercorn (asyncio) starts in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from hypercorn.asyncio import serve
from hypercorn.config import Config

NAME = os.environ.get("UPSTREAM_NAME", "upstream")
SLEEP_MS = float(os.environ.get("UPSTREAM_SLEEP_MS", "0"))
STATUS = int(os.environ.get("UPSTREAM_STATUS", "200"))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body_bytes = 0
    while True:
        message = await receive()
        body_bytes += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = {}
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    if scope["path"] == "/healthz":
        status, sleep_ms = 200, 0.0
    else:
        status = int(headers.get("x-test-status", STATUS))
        sleep_ms = float(headers.get("x-test-sleep-ms", SLEEP_MS))
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    payload = json.dumps(
        {
            "name": NAME,
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body_bytes": body_bytes,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-upstream", NAME.encode()),
                *[
                    (f"x-floodgate-usage-{kind}".encode(), headers[f"x-test-usage-{kind}"].encode())
                    for kind in ("tokens", "cost-micros")
                    if f"x-test-usage-{kind}" in headers
                ],
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 75
    config.backlog = 1024
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
