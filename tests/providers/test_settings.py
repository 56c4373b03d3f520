"""The one settings model for providers: read from ``FLOODGATE_<DEP>_*``, validated, written back
for a child process, and never showing a key."""

from __future__ import annotations

import providers
import pytest
from providers import DEPENDENCIES, ProviderSettings, load_provider_settings


def test_unset_providers_are_the_simulator_with_its_models() -> None:
    loaded = load_provider_settings(DEPENDENCIES, environ={})
    assert list(loaded) == list(DEPENDENCIES)
    assert {p.base_url for p in loaded.values()} == {providers.SIMULATOR_BASE_URL}
    assert {dep: p.model for dep, p in loaded.items()} == {
        "llm": "sim-chat-1",
        "embed": "sim-embed-384",
        "rerank": "sim-rerank-1",
        "search": "",
        "fetch": "",
    }
    assert providers.api_keys(loaded) == {}


def test_variables_name_each_providers_url_key_and_model() -> None:
    env = {
        "FLOODGATE_LLM_BASE_URL": "https://api.openai.com/",
        "FLOODGATE_LLM_API_KEY": "sk-test",
        "FLOODGATE_LLM_MODEL": "gpt-4o-mini",
        "FLOODGATE_EMBED_MODEL": "",  # empty is unset: the default model
        "FLOODGATE_SEARCH_API_KEY": "s3",
    }
    loaded = load_provider_settings(("llm", "embed", "search"), environ=env, default_base_url="http://sim:1")
    assert loaded["llm"] == ProviderSettings(
        base_url="https://api.openai.com", api_key="sk-test", model="gpt-4o-mini"
    )
    assert loaded["embed"] == ProviderSettings(base_url="http://sim:1", model="sim-embed-384")
    assert providers.base_urls(loaded) == {
        "llm": "https://api.openai.com",
        "embed": "http://sim:1",
        "search": "http://sim:1",
    }
    assert providers.api_keys(loaded) == {"llm": "sk-test", "search": "s3"}


def test_without_a_default_an_unset_provider_is_left_out() -> None:
    env = {
        "FLOODGATE_EMBED_BASE_URL": "http://embed.test",
        "FLOODGATE_FETCH_BASE_URL": "",
        "FLOODGATE_FETCH_API_KEY": "k",
    }
    loaded = load_provider_settings(("embed", "fetch"), environ=env, default_base_url=None)
    assert set(loaded) == {"embed"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FLOODGATE_SEARCH_BASE_URL": "localhost:9"}, "FLOODGATE_SEARCH_BASE_URL: must be an http(s) URL"),
        ({"FLOODGATE_LLM_BASE_URL": "ftp://x"}, "(got 'ftp://x')"),
    ],
)
def test_a_bad_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(providers.ProviderSettingsError, match=r"^FLOODGATE_") as caught:
        load_provider_settings(DEPENDENCIES, environ=env)
    assert message in str(caught.value)


def test_the_environment_reads_back_the_same_settings() -> None:
    env = {"FLOODGATE_RERANK_BASE_URL": "https://rerank.test", "FLOODGATE_RERANK_API_KEY": "rk"}
    loaded = load_provider_settings(DEPENDENCIES, environ=env)
    written = providers.provider_environment(loaded)
    assert written["FLOODGATE_RERANK_API_KEY"] == "rk" and written["FLOODGATE_LLM_API_KEY"] == ""
    assert len(written) == 3 * len(DEPENDENCIES)
    assert load_provider_settings(DEPENDENCIES, environ=written) == loaded


def test_settings_never_show_keys() -> None:
    settings = ProviderSettings(base_url="https://x.test", api_key="sk-secret", model="m")
    assert "secret" not in repr(settings) and "secret" not in str(settings)
    assert "key=set" in repr(settings)
    assert "secret" not in repr({"llm": settings})
