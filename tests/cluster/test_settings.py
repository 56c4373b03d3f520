"""ClusterSettings: defaults, environment names, one-line errors naming the variable."""

import pytest

from cluster.settings import ENV_NAMES, ClusterSettingsError, load_cluster_settings


def test_defaults_are_the_documented_ports() -> None:
    s = load_cluster_settings({})
    assert (s.gateway_port, s.envoy_admin_port, s.online_port, s.ingest_api_port) == (8080, 9901, 8081, 8082)
    assert s.ingest_worker_ports() == [8083, 8084]
    assert (s.simulator_port, s.ratelimit_port, s.pg_port) == (8090, 8091, 5433)
    assert s.embedded_postgres
    assert s.effective_database_url == "postgresql://postgres@127.0.0.1:5433/floodgate"
    assert s.provider("llm").base_url == "http://127.0.0.1:8090"
    assert set(s.providers) == {"llm", "embed", "rerank", "search", "fetch"}


def test_environment_overrides_and_derived_values() -> None:
    s = load_cluster_settings(
        {
            "FLOODGATE_SIMULATOR_PORT": "9990",
            "FLOODGATE_INGEST_WORKERS": "3",
            "FLOODGATE_INGEST_WORKER_PORT": "9000",
            "DATABASE_URL": "postgresql://app:secret@db.example:5432/fg",
            "FLOODGATE_LLM_BASE_URL": "https://api.openai.com/v1/",
            "FLOODGATE_LLM_API_KEY": "sk-test",
            "FLOODGATE_LLM_MODEL": "gpt-4o-mini",
        }
    )
    assert s.ingest_worker_ports() == [9000, 9001, 9002]
    assert not s.embedded_postgres
    assert s.effective_database_url == "postgresql://app:secret@db.example:5432/fg"
    assert all(var != "FLOODGATE_PG_PORT" for _, var in s.ports())  # no embedded server to check
    llm = s.provider("llm")
    assert (llm.base_url, llm.api_key, llm.model) == ("https://api.openai.com/v1", "sk-test", "gpt-4o-mini")
    assert "sk-test" not in repr(llm)
    assert s.provider("embed").base_url == "http://127.0.0.1:9990"  # the simulator follows its port


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLOODGATE_ONLINE_PORT": "http"}, "FLOODGATE_ONLINE_PORT: Input should be a valid integer"),
        (
            {"FLOODGATE_GATEWAY_PORT": "70000"},
            "FLOODGATE_GATEWAY_PORT: Input should be less than or equal to 65535",
        ),
        (
            {"FLOODGATE_ONLINE_PORT": "8082"},
            "FLOODGATE_INGEST_API_PORT and FLOODGATE_ONLINE_PORT both use port 8082",
        ),
        ({"FLOODGATE_INGEST_WORKERS": "8"}, "both use port 8090"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL: must be a postgresql:// URL"),
        ({"FLOODGATE_SEARCH_BASE_URL": "localhost:9"}, "FLOODGATE_SEARCH_BASE_URL: must be an http(s) URL"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterSettingsError) as caught:
        load_cluster_settings(env)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_field_has_a_floodgate_variable() -> None:
    assert ENV_NAMES["database_url"] == "DATABASE_URL"
    assert ENV_NAMES["ingest_workers"] == "FLOODGATE_INGEST_WORKERS"
    assert all(v.startswith("FLOODGATE_") for k, v in ENV_NAMES.items() if k != "database_url")
