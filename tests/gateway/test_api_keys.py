"""The keys file `make up` reads: validation that names the entry, and the rendered api_key_auth filter."""

from __future__ import annotations

import chassis
import pytest
import yaml

from cluster.api_keys import (
    API_KEYS_SAMPLE,
    ApiKeysError,
    apply_api_keys,
    load_api_keys,
    parse_api_keys,
    resolve_api_keys_file,
)
from harness.envoy import ENVOY_YAML, find_filter, load_committed


def keys(doc, tmp_path):
    return parse_api_keys(doc, source=tmp_path / "keys.yaml")


def test_sample_file_loads_and_matches_the_committed_envoy_yaml():
    sample = load_api_keys(API_KEYS_SAMPLE)
    assert sample.is_sample
    committed = find_filter(load_committed(ENVOY_YAML), "envoy.filters.http.api_key_auth")
    assert committed["typed_config"]["credentials"] == sample.credentials()


def test_several_keys_per_tenant_for_rotation(tmp_path):
    parsed = keys(
        {"tenants": {"acme": {"keys": ["k" * 16, "n" * 16]}, "globex": {"keys": ["g" * 20]}}}, tmp_path
    )
    assert parsed.credentials() == [
        {"key": "k" * 16, "client": "acme"},
        {"key": "n" * 16, "client": "acme"},
        {"key": "g" * 20, "client": "globex"},
    ]
    assert "k" * 16 not in repr(parsed)  # keys never end up in logs


@pytest.mark.parametrize(
    ("tenant", "valid"),
    [
        ("acme", True),
        ("Acme.EU", True),
        ("t_1-x", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("-acme", False),
        ("acme corp", False),
    ],
)
def test_tenant_names_follow_the_services_rule(tenant, valid, tmp_path):
    """The gateway forwards exactly the tenants every service accepts in x-floodgate-tenant."""
    assert chassis.is_valid_tenant(tenant) is valid
    doc = {"tenants": {tenant: {"keys": ["k" * 16]}}}
    if valid:
        assert keys(doc, tmp_path).tenants == {tenant: ("k" * 16,)}
    else:
        with pytest.raises(ApiKeysError, match="tenant names must match"):
            keys(doc, tmp_path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tenant": {}}, "expected one top-level key 'tenants'"),
        ({"tenants": {"Acme Corp": {"keys": ["k" * 16]}}}, "tenants.Acme Corp: tenant names must match"),
        ({"tenants": {"acme": {"keys": ["short"]}}}, "tenants.acme.keys[0]: a key is 16-256 printable"),
        ({"tenants": {"acme": {"keys": ["has space in it!!"]}}}, "tenants.acme.keys[0]"),
        (
            {"tenants": {"acme": {"keys": ["k" * 16]}, "globex": {"keys": ["k" * 16]}}},
            "tenants.globex.keys[0]: the same key is also a key of 'acme'",
        ),
        ({"tenants": {"acme": {"keys": []}}}, "no keys at all"),
        ({"tenants": {"acme": ["k" * 16]}}, "tenants.acme: expected {keys: [<key>, ...]}"),
    ],
)
def test_invalid_files_name_the_entry(tmp_path, doc, message):
    with pytest.raises(ApiKeysError) as info:
        keys(doc, tmp_path)
    assert message in str(info.value)


def test_apply_replaces_the_credentials(tmp_path):
    config = load_committed(ENVOY_YAML)
    apply_api_keys(config, keys({"tenants": {"initech": {"keys": ["i" * 16]}}}, tmp_path))
    auth = find_filter(config, "envoy.filters.http.api_key_auth")["typed_config"]
    assert auth["credentials"] == [{"key": "i" * 16, "client": "initech"}]
    with pytest.raises(ApiKeysError, match=r"no envoy\.filters\.http\.api_key_auth filter"):
        apply_api_keys(
            {"static_resources": {"listeners": []}}, keys({"tenants": {"a": {"keys": ["a" * 16]}}}, tmp_path)
        )


def test_file_resolution(tmp_path):
    explicit = tmp_path / "mine.yaml"
    explicit.write_text(yaml.safe_dump({"tenants": {"acme": {"keys": ["x" * 16]}}}))
    assert resolve_api_keys_file(str(explicit)) == explicit
    assert resolve_api_keys_file(None) in (API_KEYS_SAMPLE, API_KEYS_SAMPLE.parent / "api_keys.yaml")
    with pytest.raises(ApiKeysError, match="file not found"):
        load_api_keys(tmp_path / "missing.yaml")
