"""Pure parts: chunking, failure classification, the state table, the public API list."""

import floodgate
import pytest
import trio
from providers import MalformedAnswer

import services.ingest as ingest
from services.ingest import (
    TRANSITIONS,
    BadDocument,
    ChunkingConfig,
    FailureKind,
    JobState,
    classify_failure,
    split_into_chunks,
)
from services.ingest._errors import provider_retry_after


def test_chunks_overlap_and_cover_the_text() -> None:
    text = " ".join(f"w{i}" for i in range(25))
    chunks = split_into_chunks(text, ChunkingConfig(chunk_tokens=10, overlap_tokens=3))
    assert chunks[0] == " ".join(f"w{i}" for i in range(10))
    assert chunks[1].split()[:3] == ["w7", "w8", "w9"]  # 3 tokens of overlap
    assert chunks[-1].split()[-1] == "w24"
    # windows start every 10 - 3 = 7 tokens: 0, 7, 14, 21 (the last one is short and ends the text)
    assert [c.split()[0] for c in chunks] == ["w0", "w7", "w14", "w21"]
    assert split_into_chunks("   \n ", ChunkingConfig()) == []
    assert split_into_chunks("one", ChunkingConfig()) == ["one"]


def test_chunking_is_deterministic_and_validated() -> None:
    text = "alpha beta " * 300
    cfg = ChunkingConfig(chunk_tokens=50, overlap_tokens=10)
    assert split_into_chunks(text, cfg) == split_into_chunks(text, cfg)
    with pytest.raises(ValueError):
        ChunkingConfig(chunk_tokens=10, overlap_tokens=10)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BadDocument("empty"), FailureKind.PERMANENT),
        (floodgate.DependencyError("HTTP 404", dependency="fetch", status=404), FailureKind.PERMANENT),
        (floodgate.DependencyError("HTTP 400", dependency="embed", status=400), FailureKind.PERMANENT),
        (floodgate.DependencyError("HTTP 429", dependency="embed", status=429), FailureKind.RETRYABLE),
        (floodgate.DependencyError("HTTP 503", dependency="embed", status=503), FailureKind.RETRYABLE),
        (floodgate.DependencyError("reset", dependency="embed", status=None), FailureKind.RETRYABLE),
        (floodgate.Overloaded("full", dependency="embed"), FailureKind.RETRYABLE),
        (floodgate.CircuitOpen("open", dependency="embed"), FailureKind.RETRYABLE),
        (trio.TooSlowError(), FailureKind.RETRYABLE),
        (MalformedAnswer("3 vectors for 4 inputs", dependency="embed"), FailureKind.RETRYABLE),
        (OSError("connection refused"), FailureKind.RETRYABLE),
    ],
)
def test_failure_classification(exc: BaseException, kind: FailureKind) -> None:
    assert classify_failure(exc) is kind


def test_state_table_only_leaves_running_or_queued_except_requeue() -> None:
    for transition, (sources, targets) in TRANSITIONS.items():
        assert sources and targets, transition
        if transition.value != "requeue":
            assert sources <= {JobState.QUEUED, JobState.RUNNING}
    terminal = set(ingest.TERMINAL_STATES)
    assert terminal.isdisjoint(ingest.ACTIVE_STATES)
    assert terminal | set(ingest.ACTIVE_STATES) == set(JobState)


def test_public_api_is_exported() -> None:
    for name in ingest.__all__:
        assert hasattr(ingest, name), name
    assert sorted(ingest.__all__) == sorted(set(ingest.__all__))


def test_provider_settings_treat_empty_variables_as_unset() -> None:
    from providers import load_provider_settings

    from services.ingest.settings import PROVIDER_DEPENDENCIES

    env = {
        "FLOODGATE_EMBED_BASE_URL": "http://embed.test",
        "FLOODGATE_EMBED_MODEL": "",
        "FLOODGATE_EMBED_API_KEY": "",
        "FLOODGATE_FETCH_BASE_URL": "",
    }
    settings = load_provider_settings(PROVIDER_DEPENDENCIES, environ=env, default_base_url=None)
    assert set(settings) == {"embed"}  # no fetch provider: the worker takes text jobs only
    embed = settings["embed"]
    assert (embed.base_url, embed.model, embed.api_key) == ("http://embed.test", "sim-embed-384", "")


def test_worker_settings_map_to_the_worker_config() -> None:
    from chassis import SettingsError, load_settings

    from services.ingest import IngestWorkerSettings
    from services.ingest._bootstrap import worker_config

    from ._helpers import budget_with_tenants

    settings = load_settings(IngestWorkerSettings, "INGEST_WORKER_", {"INGEST_WORKER_LEASE_SECONDS": "3"})
    # the running caps are the budget's tenant table: 0 is no cap, a tenant's own where it differs
    budget = budget_with_tenants({"default": {"running_jobs": 0}, "acme": {"running_jobs": 2}, "globex": {}})
    config = worker_config(settings, budget)
    assert config.tenant_running_cap is None and config.lease_seconds == 3.0
    assert config.tenant_running_caps == {"acme": 2}
    with pytest.raises(SettingsError, match="INGEST_WORKER_JOB_CONCURRENCY"):
        load_settings(IngestWorkerSettings, "INGEST_WORKER_", {"INGEST_WORKER_JOB_CONCURRENCY": "0"})
    # the worker's CPU priority: os.nice's range, never above the default priority
    assert settings.nice == 0
    assert load_settings(IngestWorkerSettings, "INGEST_WORKER_", {"INGEST_WORKER_NICE": "10"}).nice == 10
    for bad in ("-1", "20"):
        with pytest.raises(SettingsError, match="INGEST_WORKER_NICE"):
            load_settings(IngestWorkerSettings, "INGEST_WORKER_", {"INGEST_WORKER_NICE": bad})


def test_the_wait_a_provider_asked_for() -> None:
    def error(status: int, retry_after: float | None = None) -> floodgate.DependencyError:
        return floodgate.DependencyError(
            f"HTTP {status}", dependency="embed", status=status, retry_after=retry_after
        )

    assert provider_retry_after(error(429, 12.0)) == 12.0
    assert provider_retry_after(error(429)) is None  # a 429 that named no time
    assert provider_retry_after(error(503, 12.0)) is None  # an outage's Retry-After is not a 429
    assert provider_retry_after(floodgate.CoolingDown("paused", dependency="embed", retry_after=0.7)) == 0.7
    assert (
        provider_retry_after(floodgate.Overloaded("gate full", dependency="embed", retry_after=1.0)) is None
    )
    spent = floodgate.RetryBudgetExhausted("spent", dependency="embed", retry_after=1.0)
    spent.__cause__ = error(429, 4.0)
    assert provider_retry_after(spent) == 4.0
    together = ExceptionGroup("embed batches", [error(429, 2.0), error(429, 5.0), ValueError("x")])
    assert provider_retry_after(together) == 5.0
    assert provider_retry_after(ValueError("x")) is None
