"""The descriptor config: the reference service's format, its matching rules, and clear errors."""

from __future__ import annotations

import pytest

from services.ratelimit import ConfigError, Unit, load_config, parse_config

TREE = {
    "domain": "d",
    "descriptors": [
        {
            "key": "tenant",
            "descriptors": [
                {"key": "route", "value": "a", "rate_limit": {"unit": "second", "requests_per_unit": 2}},
                {
                    "key": "route",
                    "value": "b",
                    "rate_limit": {"unit": "minute", "requests_per_unit": 7},
                    "shadow_mode": True,
                },
                {"key": "route", "value": "pre*", "rate_limit": {"unit": "hour", "requests_per_unit": 3}},
                {"key": "route", "rate_limit": {"unit": "day", "requests_per_unit": 9}},
            ],
        },
        {"key": "tenant", "value": "vip", "rate_limit": {"unlimited": True}},
        {"key": "source", "rate_limit": {"unit": "second", "requests_per_unit": 1}},
    ],
}


def limit_of(entries):
    matched = parse_config(TREE).domain("d").find_limit(entries)
    return None if matched is None else (matched.rate_limit.requests_per_unit, matched.rate_limit.unit)


def test_exact_value_beats_wildcard_beats_key_only():
    assert limit_of((("tenant", "t1"), ("route", "a"))) == (2, Unit.SECOND)
    assert limit_of((("tenant", "t1"), ("route", "prefixed"))) == (3, Unit.HOUR)
    assert limit_of((("tenant", "t1"), ("route", "other"))) == (9, Unit.DAY)


def test_limit_applies_only_at_the_last_entry():
    # ("tenant", x) alone: the key-only tenant node has no rate_limit -> not limited
    assert limit_of((("tenant", "t1"),)) is None
    # deeper than the tree -> not limited (the reference service's behaviour)
    assert limit_of((("tenant", "t1"), ("route", "a"), ("extra", "1"))) is None
    assert limit_of((("unknown", "x"),)) is None
    assert limit_of((("source", "anything"),)) == (1, Unit.SECOND)


def test_shadow_mode_unlimited_and_metric_key():
    domain = parse_config(TREE).domain("d")
    shadow = domain.find_limit((("tenant", "t"), ("route", "b")))
    assert shadow.shadow_mode is True
    vip = domain.find_limit((("tenant", "vip"),))
    assert vip.rate_limit.unlimited is True
    # values of key-only nodes never reach metric labels (one label per tenant would explode)
    assert domain.find_limit((("tenant", "t123"), ("route", "a"))).metric_key == "d.tenant.route_a"


def test_committed_config_has_the_issue_limits():
    domain = load_config("config/ratelimit.yaml").domain("floodgate")
    assert domain.find_limit((("tenant", "x"), ("route", "deal_brain"))).rate_limit.requests_per_unit == 20
    assert domain.find_limit((("tenant", "x"), ("route", "omnirag_submit"))).rate_limit.requests_per_unit == 5
    for route in ("deal_brain", "shadow_hunter", "nexus_assess", "omnirag_submit", "omnirag_read"):
        assert domain.find_limit((("tenant", "x"), ("route", route))).rate_limit.unit is Unit.SECOND


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"descriptors": []}, "'domain' must be a non-empty string"),
        (
            {"domain": "d", "descriptors": [{"value": "x"}]},
            "d.descriptors[0].key: must be a non-empty string",
        ),
        (
            {
                "domain": "d",
                "descriptors": [{"key": "k", "rate_limit": {"unit": "fortnight", "requests_per_unit": 1}}],
            },
            "d.descriptors[0].rate_limit.unit: 'fortnight' is not one of second, minute, hour, day",
        ),
        (
            {
                "domain": "d",
                "descriptors": [{"key": "k", "rate_limit": {"unit": "second", "requests_per_unit": -1}}],
            },
            "requests_per_unit: must be an integer >= 0",
        ),
        ({"domain": "d", "descriptors": [{"key": "k", "ratelimit": {}}]}, "unknown key(s) ['ratelimit']"),
        ({"domain": "d", "descriptors": [{"key": "k"}, {"key": "k"}]}, "duplicate descriptor 'k'"),
        (
            {"domain": "d", "descriptors": [{"key": "k", "shadow_mode": "yes"}]},
            "shadow_mode: must be true or false",
        ),
    ],
)
def test_invalid_configs_name_the_key(doc, message):
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert message in str(info.value)


def test_several_domains_in_one_file(tmp_path):
    path = tmp_path / "rl.yaml"
    path.write_text(
        "domain: one\ndescriptors: []\n---\ndomain: two\ndescriptors:\n  - key: k\n"
        "    rate_limit: {unit: second, requests_per_unit: 1}\n"
    )
    config = load_config(path)
    assert sorted(config.domains) == ["one", "two"]
    assert config.domain("two").find_limit((("k", "v"),)) is not None


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("domain: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
