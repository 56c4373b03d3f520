"""The scenario file of `floodgate loadtest` (floodgate/_load_scenario.py): the shipped file is valid,
a bad file gets errors naming the key path, document sizes follow their distribution, and the
`floodgate loadtest` command validates and dry-runs."""

from __future__ import annotations

import copy
import io
import random
import statistics
from pathlib import Path
from typing import Any

import pytest
from floodgate import cli
from floodgate._load_scenario import (
    LoadTestFile,
    ScenarioError,
    load_scenarios,
    parse_scenarios,
    summarize,
)

REPO_FILE = Path(__file__).resolve().parents[2] / "config" / "loadtest.toml"


def small_file() -> dict[str, Any]:
    return {
        "tenants": {"acme": 1},
        "requests": {
            "ask": {"path": "/v1/ask", "body": {"q": "x"}},
            "submit": {
                "kind": "job",
                "path": "/v1/jobs",
                "document_size": {"distribution": "fixed", "bytes": 1000},
            },
        },
        "thresholds": {"ask": {"p95_ms": 100}},
        "scenarios": {
            "steady": {"executor": "constant", "rate": 5, "duration": 10, "requests": {"ask": 1}},
            "ramp": {
                "executor": "ramping",
                "stages": [{"target": 10, "duration": 10}],
                "requests": {"ask": 3, "submit": 1},
                "tenants": {"globex": 2},
            },
            "both": {"phases": [{"name": "a", "run": ["steady"]}, {"name": "b", "run": ["steady", "ramp"]}]},
        },
    }


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenarios(data)
    return info.value.problems


def test_the_shipped_file_is_valid_and_has_the_plans_scenarios():
    spec = load_scenarios(REPO_FILE)
    for name in ("online", "ingest", "mixed", "capacity", "isolation"):
        assert name in spec.scenarios
    # capacity ramps in stages, one endpoint per phase; isolation is dealBrain alone, then with ingestion
    capacity = spec.phases("capacity")
    assert all(stream.executor == "ramping" for _, streams in capacity for _, stream in streams)
    assert [[s for s, _ in streams] for _, streams in spec.phases("isolation")] == [
        ["isolation_deal_brain"],
        ["isolation_deal_brain", "isolation_ingest"],
    ]
    mixed = {t for _, streams in spec.phases("mixed") for _, s in streams for t in s.requests}
    assert mixed == {"deal_brain", "shadow_hunter", "nexus_assess", "omnirag_submit"}
    assert spec.requests["omnirag_submit"].kind == "job"
    assert set(spec.thresholds) == set(spec.requests)


def test_a_stream_becomes_its_schedule_and_a_composite_its_phases():
    spec = parse_scenarios(small_file())
    assert list(spec.scenarios["steady"].schedule().offsets()) == [i / 5 for i in range(50)]
    assert spec.scenarios["ramp"].schedule().expected_count == 50
    (phase_a, a), (phase_b, b) = summarize(spec, "both")
    assert (phase_a, [s.name for s in a], phase_b) == ("a", ["steady"], "b")
    assert [(s.name, s.expected_requests, s.tenants) for s in b] == [
        ("steady", 50, {"acme": 1}),  # the file's tenants
        ("ramp", 50, {"globex": 2}),  # its own
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["scenarios"]["steady"].pop("rate"), "scenarios.steady: a constant executor needs rate"),
        (lambda d: d["scenarios"]["steady"].update(rate=-1), "scenarios.steady.rate: must be > 0"),
        (
            lambda d: d["scenarios"]["steady"].update(max_in_flight=0),
            "scenarios.steady.max_in_flight: must be >= 1",
        ),
        (lambda d: d["scenarios"]["steady"].update(executor="poisson"), "scenarios.steady.executor:"),
        (lambda d: d["scenarios"]["steady"].update(rates=3), "scenarios.steady.rates: unknown key"),
        (
            lambda d: d["scenarios"]["ramp"]["stages"].append({"target": 1, "duration": 0}),
            "scenarios.ramp.stages.1.duration: must be > 0",
        ),
        (
            lambda d: d["scenarios"]["ramp"].update(duration=5),
            "scenarios.ramp: a ramping executor takes start_rate and stages, not rate or duration",
        ),
        (
            lambda d: d["scenarios"]["ramp"].update(stages=[]),
            "scenarios.ramp: a ramping executor needs stages",
        ),
        (
            lambda d: d["scenarios"]["steady"]["requests"].update(nope=1),
            "scenarios.steady.requests.nope: unknown request template (known: ask, submit)",
        ),
        (
            lambda d: d["scenarios"]["steady"]["requests"].update(ask=0),
            "scenarios.steady.requests.ask: must be > 0",
        ),
        (
            lambda d: d["scenarios"]["ramp"]["tenants"].update({"bad name": 1}),
            "scenarios.ramp.tenants.bad name",
        ),
        (lambda d: d.update(tenants={}), "scenarios.steady.tenants: no tenants"),
        (
            lambda d: d["scenarios"]["both"]["phases"][1]["run"].append("gone"),
            "scenarios.both.phases.1.run: unknown scenario 'gone'",
        ),
        (
            lambda d: d["scenarios"]["both"]["phases"][0]["run"].append("both"),
            "scenarios.both.phases.0.run: 'both' has phases itself",
        ),
        (
            lambda d: d["scenarios"]["both"].update(rate=3),
            "scenarios.both: a scenario with phases takes no rate",
        ),
        (
            lambda d: d["requests"]["submit"].update(
                document_size={"distribution": "lognormal", "median_bytes": 10}
            ),
            "requests.submit.document_size.sigma: is required",
        ),
        (
            lambda d: d["requests"]["submit"].update(
                document_size={"distribution": "uniform", "min_bytes": 10, "max_bytes": 5}
            ),
            "requests.submit.document_size: max_bytes must be >= min_bytes",
        ),
        (
            lambda d: d["requests"]["submit"].pop("document_size"),
            "requests.submit: a job template needs document_size",
        ),
        (lambda d: d["requests"]["ask"].update(path="v1/ask"), "requests.ask.path:"),
        (lambda d: d["thresholds"].update(other={"p99_ms": 5}), "thresholds.other: unknown request template"),
        (lambda d: d["thresholds"]["ask"].pop("p95_ms"), "thresholds.ask: set p95_ms, p99_ms or both"),
        (
            lambda d: d.update(validity={"max_dropped_fraction": 2}),
            "validity.max_dropped_fraction: must be <= 1",
        ),
    ],
)
def test_a_bad_file_names_the_key_path(edit, expected):
    data = copy.deepcopy(small_file())
    edit(data)
    found = problems(data)
    assert any(p.startswith(expected) for p in found), found


def test_load_reports_a_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenarios(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenarios\n")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenarios(bad)


def test_document_sizes_follow_their_distribution():
    spec = parse_scenarios(small_file())
    assert spec.requests["submit"].document_size.sample(random.Random(1)) == 1000
    data = small_file()
    data["requests"]["submit"]["document_size"] = {
        "distribution": "uniform",
        "min_bytes": 10,
        "max_bytes": 20,
    }
    uniform = parse_scenarios(data).requests["submit"].document_size
    rng = random.Random(7)
    assert {uniform.sample(rng) for _ in range(500)} == set(range(10, 21))
    data["requests"]["submit"]["document_size"] = {
        "distribution": "lognormal",
        "median_bytes": 20000,
        "sigma": 1.0,
        "max_bytes": 200000,
    }
    lognormal = parse_scenarios(data).requests["submit"].document_size
    rng = random.Random(7)
    sizes = [lognormal.sample(rng) for _ in range(4000)]
    assert 18000 < statistics.median(sizes) < 22000
    assert max(sizes) == 200000  # the tail is cut at max_bytes (e^2.3 sigma is about 1 in 100)
    assert min(sizes) >= 1


def test_validity_spec_becomes_the_schedulers_limits():
    data = small_file()
    data["validity"] = {"max_late_p99_ms": 5, "max_late_ms": 0, "max_dropped_fraction": 0.01}
    validity = parse_scenarios(data).validity.validity()
    assert (validity.max_late_p99, validity.max_late, validity.max_dropped_fraction) == (0.005, None, 0.01)
    assert isinstance(parse_scenarios(small_file()), LoadTestFile)


# -- the command -------------------------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_loadtest_validate_lists_the_scenarios():
    code, out, _ = run_cli("loadtest", "--validate", "--file", str(REPO_FILE))
    assert code == 0
    assert out.startswith(f"{REPO_FILE}: valid, ")
    assert "  isolation: 2 phase(s); dealBrain alone" in out
    assert "  ingest: constant 5/s for 60s; " in out


def test_loadtest_dry_run_prints_each_phase(tmp_path):
    path = tmp_path / "lt.toml"
    path.write_text(
        """
[tenants]
acme = 1
[requests.ask]
path = "/v1/ask"
[thresholds.ask]
p99_ms = 250
[scenarios.steady]
executor = "constant"
rate = 5
duration = 10
requests = { ask = 1 }
[scenarios.ramp]
executor = "ramping"
stages = [{ target = 10, duration = 10 }, { target = 10, duration = 5 }]
max_in_flight = 7
requests = { ask = 1 }
[scenarios.both]
phases = [{ name = "first", run = ["steady"] }, { name = "second", run = ["steady", "ramp"] }]
"""
    )
    code, out, err = run_cli("loadtest", "both", "--dry-run", "--file", str(path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"floodgate loadtest both (dry run, {path}): 2 phase(s), 25s"
    assert "phase second (15s)" in lines
    ramp = next(line for line in lines if line.startswith("ramp "))
    assert ramp.split() == [
        "ramp",
        "ramping",
        "from",
        "0/s:",
        "10/s",
        "in",
        "10s,",
        "hold",
        "5s",
        "100",
        "10/s",
        "7",
        "ask",
        "1",
        "acme",
        "1",
    ]
    assert "valid when: p99 lateness <= 10ms, every request <= 100ms late, dropped <= 0.0%" in lines
    assert "threshold ask: p99 <= 250ms" in lines


def test_loadtest_refuses_a_bad_file_an_unknown_scenario_and_a_missing_mode(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[requests.a]\npath = "/a"\n[scenarios.s]\nexecutor = "constant"\nrequests = { a = 1 }\n')
    code, _, err = run_cli("loadtest", "--validate", "--file", str(bad))
    assert code == 2 and "scenarios.s: a constant executor needs rate and duration" in err
    code, _, err = run_cli("loadtest", "nope", "--dry-run", "--file", str(REPO_FILE))
    assert code == 2 and "unknown scenario 'nope'" in err
    code, _, err = run_cli("loadtest", "--dry-run", "--file", str(REPO_FILE))
    assert code == 2 and "needs a SCENARIO" in err
    # a run needs the keys of the scenario's tenants: a missing keys file stops it before it sends
    code, _, err = run_cli(
        "loadtest", "online", "--keys", str(tmp_path / "none.yaml"), "--file", str(REPO_FILE)
    )
    assert code == 2 and "cannot read the API keys file" in err
    # and a plan to compare the knees with must be `floodgate plan --format json` output
    keys = REPO_FILE.parent / "api_keys.sample.yaml"
    junk = tmp_path / "plan.json"
    for text, message in (
        ("{", "not JSON"),
        ('{"capacities": []}', "not `floodgate plan --format json` output"),
    ):
        junk.write_text(text)
        code, _, err = run_cli(
            "loadtest", "online", "--keys", str(keys), "--file", str(REPO_FILE), "--plan", str(junk)
        )
        assert code == 2 and f"--plan {junk}: {message}" in err, err
    code, _, err = run_cli(
        "loadtest",
        "online",
        "--keys",
        str(keys),
        "--file",
        str(REPO_FILE),
        "--plan",
        str(tmp_path / "no.json"),
    )
    assert code == 2 and f"--plan {tmp_path / 'no.json'}: No such file" in err, err
