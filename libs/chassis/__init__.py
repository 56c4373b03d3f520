"""The service chassis: what every Floodgate service shares (app factory, errors, settings, serving).

Services build on it so the edge contract is the same everywhere: JSON errors, request ids, probes,
metrics (one registry per process, with what the process costs and its event-loop lag), structured
logs, graceful shutdown.
"""

from ._app import (
    REQUEST_ID_HEADER,
    TENANT_HEADER,
    ChassisState,
    ReadinessCheck,
    chassis_state,
    create_app,
)
from ._errors import ApiError, exception_leaves
from ._logging import configure_logging
from ._openapi import (
    INTERNAL_ERROR,
    ErrorBody,
    ErrorResponse,
    ErrorSpec,
    error_responses,
    probe_paths,
    service_document,
)
from ._process import register_process_metrics
from ._request import TENANT_PATTERN, is_valid_tenant, parse_body, require_tenant
from ._serve import StartupError, loop_lag_monitor, run_service, serve
from ._settings import BaseServiceSettings, SettingsError, load_settings

__all__ = [
    "INTERNAL_ERROR",
    "REQUEST_ID_HEADER",
    "TENANT_HEADER",
    "TENANT_PATTERN",
    "ApiError",
    "BaseServiceSettings",
    "ChassisState",
    "ErrorBody",
    "ErrorResponse",
    "ErrorSpec",
    "ReadinessCheck",
    "SettingsError",
    "StartupError",
    "chassis_state",
    "configure_logging",
    "create_app",
    "error_responses",
    "exception_leaves",
    "is_valid_tenant",
    "load_settings",
    "loop_lag_monitor",
    "parse_body",
    "probe_paths",
    "register_process_metrics",
    "require_tenant",
    "run_service",
    "serve",
    "service_document",
]
