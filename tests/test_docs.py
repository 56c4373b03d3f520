"""The docs name only what exists: README.md and docs/**/*.md checked against the repository.

Each test collects every problem across the pages and fails once, one line per problem naming the page
and the bad reference: a link or anchor that does not resolve, a `make` target the Makefile lacks, a
setting no code reads, a CLI command or option its argparse parser lacks, an error code no code answers,
a repository path that does not exist, a `floodgate plan` sample that is not what the command prints.
Pure file reading (plus the CLIs' `--help`), so it runs in the virtual-clock suite.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Page:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


def doc_pages() -> list[Page]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [Page(p, p.read_text(encoding="utf-8")) for p in paths]


# -- markdown ------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")


def prose_lines(page: Page) -> Iterator[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(page.lines, start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def code_snippets(page: Page) -> Iterator[tuple[int, str]]:
    """(line number, text) of every fenced code line and every inline code span."""
    fenced = False
    for number, line in enumerate(page.lines, start=1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            yield number, line
        else:
            for match in _INLINE_CODE.finditer(line):
                yield number, match.group(2).strip()


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower-cased, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    seen: dict[str, int] = {}
    result: set[str] = set()
    for _, line in prose_lines(page):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def links(page: Page) -> Iterator[tuple[int, str]]:
    for number, line in prose_lines(page):
        for match in _LINK.finditer(_INLINE_CODE.sub("", line)):
            yield number, match.group(1)


def table_column(page: Page, header: str) -> Iterator[tuple[int, str]]:
    """(line number, cell) of every row of every table whose header row has a cell `header`."""
    column: int | None = None
    for number, line in prose_lines(page):
        if not line.lstrip().startswith("|"):
            column = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            names = [c.strip("`").strip().lower() for c in cells]
            column = names.index(header) if header in names else -1
            continue
        if column < 0 or column >= len(cells) or set(cells[column]) <= set("-: "):
            continue
        yield number, cells[column]


# -- what the repository has ---------------------------------------------------------------------------


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, flags=re.MULTILINE))


def _code_files() -> Iterator[Path]:
    for folder in ("libs", "services", "cluster", "bench", "tests"):
        yield from (ROOT / folder).rglob("*.py")


@cache
def known_settings() -> frozenset[str]:
    """Every environment variable the code reads: derived from the settings models, plus literals."""
    from cluster.settings import DEPENDENCIES, ENV_NAMES
    from services.ingest.settings import IngestApiSettings, IngestWorkerSettings
    from services.online.settings import OnlineSettings
    from services.ratelimit._settings import RateLimitSettings
    from services.simulator.settings import ENV_PREFIX, SimulatorSettings

    names = set(ENV_NAMES.values())
    names |= {
        f"FLOODGATE_{dep.upper()}_{field}"
        for dep in DEPENDENCIES
        for field in ("BASE_URL", "API_KEY", "MODEL")
    }
    # Each service's settings model and the prefix its __main__ loads it with.
    models = {
        "ONLINE_": OnlineSettings,
        "INGEST_API_": IngestApiSettings,
        "INGEST_WORKER_": IngestWorkerSettings,
        ENV_PREFIX: SimulatorSettings,
        "RATELIMIT_": RateLimitSettings,
    }
    for prefix, model in models.items():
        names |= {f"{prefix}{field.upper()}" for field in model.model_fields}
    # The Makefile's short names for settings: `make up ONLINE_REPLICAS=2` sets FLOODGATE_ONLINE_REPLICAS.
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    names |= {m for m, var in re.findall(r"\$\(if \$\((\w+)\),(FLOODGATE_\w+)=", makefile) if var in names}
    for path in _code_files():  # read directly, e.g. FLOODGATE_TEST_REDIS_URL in the tests
        names |= set(re.findall(r"\bFLOODGATE_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(encoding="utf-8")))
    return frozenset(names)


_SETTING = re.compile(
    r"\b(?:FLOODGATE|ONLINE|INGEST_API|INGEST_WORKER|SIMULATOR|RATELIMIT)_[A-Z0-9][A-Z0-9_]*|\bDATABASE_URL\b"
)
_BRACED_SETTING = re.compile(r"\bFLOODGATE_\{([A-Z0-9,]+)\}_([A-Z0-9_]+)")


def named_settings(page: Page) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(page.lines, start=1):
        for match in _BRACED_SETTING.finditer(line):
            for dep in match.group(1).split(","):
                yield number, f"FLOODGATE_{dep}_{match.group(2)}"
        for match in _SETTING.finditer(_BRACED_SETTING.sub("", line)):
            yield number, match.group(0)


@dataclass(frozen=True)
class Cli:
    """A command-line entry point with an argparse parser: ``main(argv)``."""

    pattern: re.Pattern[str]
    main: Callable[[list[str]], object]


def _floodgate_main(argv: list[str]) -> object:
    from floodgate.cli import main

    return main(argv)


def _cluster_main(argv: list[str]) -> object:
    from cluster.cli import main

    return main(argv)


def _envoy_main(argv: list[str]) -> object:
    from cluster.envoy import main

    return main(argv)


CLIS = {
    # A command line starts the snippet or follows a space, a shell separator or a bin/ directory (so a
    # database URL ending in /floodgate is no command).
    "floodgate": Cli(
        re.compile(r"(?:^|(?<=[\s;&|(])|(?<=bin/))floodgate[ \t]+([a-z][\w-]*)(.*)"), _floodgate_main
    ),
    "python -m cluster": Cli(re.compile(r"\bpython -m cluster[ \t]+([a-z][\w-]*)(.*)"), _cluster_main),
    "python -m cluster.envoy": Cli(
        re.compile(r"\bpython -m cluster\.envoy[ \t]+([a-z][\w-]*)(.*)"), _envoy_main
    ),
}


@cache
def cli_help(cli: str, *argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        CLIS[cli].main([*argv, "--help"])
    return out.getvalue()


def cli_commands(cli: str) -> set[str]:
    match = re.search(r"\{([\w,-]+)\}", cli_help(cli))
    assert match, f"no subcommands in the help of {cli}:\n{cli_help(cli)}"
    return set(match.group(1).split(","))


@cache
def known_error_codes() -> frozenset[str]:
    """Every string literal of the services' code, and every code Envoy's local replies answer with.

    A documented code must be one of these; a code the code base no longer produces anywhere fails.
    """
    codes: set[str] = set()
    for folder in ("libs", "services", "cluster"):
        for path in (ROOT / folder).rglob("*.py"):
            codes |= set(re.findall(r"""["']([a-z][a-z0-9_]*)["']""", path.read_text(encoding="utf-8")))
    envoy = (ROOT / "gateway" / "envoy.yaml").read_text()
    codes |= set(re.findall(r"^\s*code:\s*([a-z][a-z0-9_]*)\s*$", envoy, flags=re.MULTILINE))
    codes |= set(re.findall(r'\\"code\\":\\"([a-z][a-z0-9_]*)\\"', envoy))
    return frozenset(codes)


_REPO_PATH = re.compile(
    r"^(?:libs|services|cluster|tests|bench|config|gateway|migrations|docs|examples|harness|\.ci)/[\w./-]*$"
)
#: Paths the docs name that the user or a run creates, so a clone does not have them.
_CREATED_PATHS = {"config/api_keys.yaml", "bench/.venv-peers"}


# -- the checks ----------------------------------------------------------------------------------------


def _fail_on(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems), pytrace=False)


def test_links_and_anchors_resolve() -> None:
    pages = {page.path: page for page in doc_pages()}
    problems = []
    for page in pages.values():
        for number, target in links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.path.parent / path_part).resolve() if path_part else page.path
            where = f"{page.name}:{number}: link ({target})"
            if not resolved.exists():
                problems.append(f"{where}: {path_part} does not exist")
                continue
            if not anchor:
                continue
            if resolved.suffix != ".md" or resolved.is_dir():
                problems.append(f"{where}: an anchor into a file that is not a markdown page")
                continue
            target_page = pages.get(resolved) or Page(resolved, resolved.read_text(encoding="utf-8"))
            if anchor not in anchors(target_page):
                problems.append(f"{where}: no heading with anchor #{anchor} in {target_page.name}")
    _fail_on(problems, "broken links or anchors")


def test_make_targets_exist() -> None:
    targets = make_targets()
    problems = []
    for page in doc_pages():
        for number, snippet in code_snippets(page):
            for match in re.finditer(r"(?:^|[\s;&|(])make[ \t]+([a-z][\w*-]*)", snippet):
                name = match.group(1)
                if not fnmatch.filter(targets, name):
                    problems.append(f"{page.name}:{number}: `make {name}`: no such target in the Makefile")
    _fail_on(problems, "unknown make targets")


def test_settings_exist() -> None:
    known = known_settings()
    problems = []
    for page in doc_pages():
        for number, name in named_settings(page):
            if name.endswith("_"):  # a prefix, e.g. FLOODGATE_LLM_ in prose: some setting must start so
                ok = any(k.startswith(name) for k in known)
            else:
                ok = name in known
            if not ok:
                problems.append(f"{page.name}:{number}: setting {name} is read nowhere in the code")
    _fail_on(problems, "unknown settings")


def test_cli_commands_exist() -> None:
    problems = []
    for page in doc_pages():
        for number, snippet in code_snippets(page):
            for cli, spec in CLIS.items():
                for match in spec.pattern.finditer(snippet):
                    command, rest = match.group(1), match.group(2)
                    if command not in cli_commands(cli):
                        problems.append(f"{page.name}:{number}: `{cli} {command}`: no such command")
                        continue
                    rest = re.split(r"[|;#&]", rest)[0]
                    help_text = cli_help(cli, command)
                    for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest):
                        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text):
                            problems.append(
                                f"{page.name}:{number}: `{cli} {command} {option}`: no such option"
                            )
    _fail_on(problems, "unknown CLI commands or options")


def test_error_codes_exist() -> None:
    known = known_error_codes()
    problems = []
    for page in doc_pages():
        for number, cell in table_column(page, "code"):
            for code in re.findall(r"`([^`]+)`", cell):
                if code not in known:
                    problems.append(
                        f"{page.name}:{number}: error code `{code}` is answered nowhere in the code"
                    )
    _fail_on(problems, "unknown error codes")


def test_repository_paths_exist() -> None:
    problems = []
    for page in doc_pages():
        for number, line in prose_lines(page):
            for span in _INLINE_CODE.finditer(line):
                for token in re.split(r"[\s=]+", span.group(2)):
                    token = token.split("::")[0].rstrip(".,:;)")
                    if not _REPO_PATH.match(token) or token in _CREATED_PATHS:
                        continue
                    if not (ROOT / token).exists():
                        problems.append(f"{page.name}:{number}: path {token} does not exist")
    _fail_on(problems, "paths that do not exist")


def test_plan_sample_is_what_floodgate_plan_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    from floodgate.cli import main

    page = Page(ROOT / "docs" / "budget.md", (ROOT / "docs" / "budget.md").read_text(encoding="utf-8"))
    lines = page.lines
    start = lines.index("$ floodgate plan") + 1
    end = next(i for i in range(start, len(lines)) if _FENCE.match(lines[i]))
    documented = [line.rstrip() for line in lines[start:end]]

    monkeypatch.chdir(ROOT)
    out, err = io.StringIO(), io.StringIO()
    if main(["plan"], out=out, err=err) != 0:
        pytest.fail(f"floodgate plan failed on config/budget.toml:\n{err.getvalue()}", pytrace=False)
    printed = [line.rstrip() for line in out.getvalue().rstrip("\n").splitlines()]
    if documented != printed:
        import difflib

        diff = "\n".join(
            difflib.unified_diff(documented, printed, "docs/budget.md", "floodgate plan", lineterm="")
        )
        pytest.fail(
            f"docs/budget.md: the `floodgate plan` sample is stale; paste the new output:\n{diff}",
            pytrace=False,
        )


_METRIC = re.compile(r"^(?:floodgate|http|ingest|ratelimit|process|python|envoy)_[a-z0-9_]*[a-z0-9]$")
_METRIC_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
#: What prometheus_client's default collectors export (they are registered on every service's registry).
_DEFAULT_COLLECTORS = {
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
    "python_gc_objects_collected",
    "python_gc_objects_uncollectable",
    "python_gc_collections",
    "python_info",
}


@cache
def known_metric_names() -> frozenset[str]:
    """Every metric-shaped string literal of the code (the names the collectors are created with),
    and the default collectors' names."""
    names = set(_DEFAULT_COLLECTORS)
    for folder in ("libs", "services", "cluster"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            names |= {n for n in re.findall(r"""["']([a-z][a-z0-9_]*)["']""", text) if _METRIC.match(n)}
    return frozenset(names)


def _metric_base(name: str) -> str:
    for suffix in _METRIC_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_metric_names_exist() -> None:
    """Every metric a page names (in backticks, labels and suffixes aside) is one a process exports.
    Envoy's own statistics (`envoy_*`) come from Envoy and are checked by the live-scrape test."""
    known = known_metric_names()
    tables = {
        name.lower()
        for sql in (ROOT / "migrations").glob("*.sql")
        for name in re.findall(
            r"CREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql.read_text(), re.I
        )
    }
    problems = []
    checked = 0
    for page in doc_pages():
        for number, line in prose_lines(page):
            for span in _INLINE_CODE.finditer(line):
                token = span.group(2).strip().split("{")[0].split("[")[0]
                if (
                    not _METRIC.match(token)
                    or token.startswith("envoy_")
                    or token.count("_") < 2
                    or token in tables
                ):
                    continue
                checked += 1
                if token not in known and _metric_base(token) not in known:
                    problems.append(f"{page.name}:{number}: metric {token} is exported by nothing")
    assert checked > 20, "the docs name almost no metric: has docs/observability.md moved?"
    _fail_on(problems, "metric names that nothing exports")
