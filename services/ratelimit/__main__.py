"""``python -m services.ratelimit``: Envoy's global rate-limit service (gRPC) plus its probe port.

Environment: ``RATELIMIT_HOST`` (127.0.0.1), ``RATELIMIT_PORT`` (8091, gRPC), ``RATELIMIT_HTTP_PORT``
(8092: /healthz, /readyz, /metrics and the gateway's ``GET /v1/usage``), ``RATELIMIT_CONFIG``
(config/ratelimit.yaml), ``REDIS_URL``
(counters in Redis when set; ``RATELIMIT_REDIS_URL`` wins over it), ``RATELIMIT_LOG_FORMAT``.
"""

from __future__ import annotations

import os
import sys

from chassis import SettingsError, StartupError, configure_logging, load_settings

from ._server import serve
from ._settings import RateLimitSettings


def main() -> int:
    env = dict(os.environ)
    if env.get("REDIS_URL") and "RATELIMIT_REDIS_URL" not in env:
        env["RATELIMIT_REDIS_URL"] = env["REDIS_URL"]
    try:
        settings = load_settings(RateLimitSettings, "RATELIMIT_", env)
    except SettingsError as exc:
        print(f"ratelimit: invalid settings: {exc}", file=sys.stderr, flush=True)
        return 2
    configure_logging(service="ratelimit", log_format=settings.log_format, level=settings.log_level)
    try:
        serve(settings)
    except StartupError as exc:
        print(f"ratelimit: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
