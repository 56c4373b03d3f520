"""The simulated web: a few hundred business-news documents generated at import, and a search index.

The corpus is built from fixed word lists with a fixed seed, so every process, machine and run has
the same documents at the same URLs (``https://corpus.floodgate.test/<slug>``). Topics follow what
Floodgate's endpoints ask about: companies, markets, technology and deals (acquisitions, funding
rounds, earnings, launches, partnerships, regulation). Each company appears in several documents,
so a search for it returns a ranked list, not a single hit.

Search ranks with BM25 over title (counted twice) and body; the snippet is the sentence that
shares the most words with the query.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cache

from ._text import content_words, sentence_words

__all__ = ["CORPUS_BASE_URL", "Corpus", "Document", "SearchHit", "corpus"]

CORPUS_BASE_URL = "https://corpus.floodgate.test/"
CORPUS_SEED = 20240917
CORPUS_SIZE = 320


@dataclass(frozen=True)
class Document:
    url: str
    title: str
    text: str
    published: str
    topic: str


@dataclass(frozen=True)
class SearchHit:
    document: Document
    score: float
    snippet: str


# -- word lists ------------------------------------------------------------------------------------

_PREFIXES = [
    "Aldercrest", "Brightwater", "Cobaltline", "Driftwood", "Emberline", "Fernhill", "Granitepeak",
    "Harborview", "Ironbark", "Juniper", "Keystone", "Lumenfield", "Meridian", "Northwind", "Oakridge",
    "Pinecrest", "Quarrystone", "Redwood", "Silverline", "Tidewater", "Umberlake", "Vantage",
    "Westbrook", "Yarrowfield",
]  # fmt: skip
# kind -> (sector phrase, what the company sells)
_KINDS = {
    "Robotics": ("industrial automation", "warehouse robots"),
    "Analytics": ("data software", "analytics platforms"),
    "Therapeutics": ("biotechnology", "gene therapies"),
    "Energy": ("renewable energy", "grid-scale batteries"),
    "Logistics": ("freight and logistics", "route optimisation services"),
    "Payments": ("fintech", "payment processing"),
    "Semiconductors": ("semiconductors", "AI accelerator chips"),
    "Health": ("digital health", "remote patient monitoring"),
    "Foods": ("consumer foods", "plant-based proteins"),
    "Motors": ("electric vehicles", "electric delivery vans"),
    "Cloud": ("cloud infrastructure", "managed GPU clusters"),
    "Security": ("cybersecurity", "zero-trust network gateways"),
}
_TECH = [
    "large language models", "vector databases", "solid-state batteries", "edge computing",
    "computer vision", "quantum sensing", "gene editing", "warehouse robotics", "zero-trust networking",
    "carbon capture", "RISC-V processors", "digital twins", "retrieval-augmented generation",
    "federated learning", "heat pumps", "satellite broadband",
]  # fmt: skip
_REGIONS = [
    "Europe", "North America", "Southeast Asia", "Latin America", "the Nordics", "Japan", "India",
    "the Middle East",
]  # fmt: skip
_CITIES = [
    "Berlin", "Austin", "Singapore", "Toronto", "Lisbon", "Seoul", "Nairobi", "Melbourne", "Dublin",
    "Sao Paulo", "Amsterdam", "Denver",
]  # fmt: skip
_FIRST = ["Amara", "Bruno", "Chen", "Dalia", "Erik", "Farah", "Goran", "Hana", "Ivan", "Julia", "Kofi",
          "Lena", "Mateo", "Nadia", "Omar", "Priya", "Rafael", "Sofia", "Tomas", "Yuki"]  # fmt: skip
_LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Castillo", "Novak", "Haddad", "Brennan", "Iyer",
         "Kowalski", "Adeyemi", "Fischer", "Santos", "Park", "Rossi", "Mbeki"]  # fmt: skip
_INVESTORS = [
    "Northstar Ventures", "Bluefin Capital", "Harrow Partners", "Sequoia Ridge Fund",
    "Copperleaf Growth", "Atlas Peak Equity", "Kestrel Ventures", "Marlow Capital",
]  # fmt: skip
_ROLES = ["executive", "financial", "technology", "operating", "product", "revenue"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip
_EXCHANGES = ["the Nasdaq", "the New York Stock Exchange", "Euronext", "the London Stock Exchange"]
_TRENDS = [
    "consolidation accelerates", "prices fall as supply grows", "demand outpaces capacity",
    "investors turn cautious", "regulation reshapes competition", "startups challenge incumbents",
]  # fmt: skip


@dataclass(frozen=True)
class _Company:
    name: str
    kind: str
    sector: str
    product: str
    city: str


def _companies(rng: random.Random) -> list[_Company]:
    kinds = list(_KINDS)
    out = []
    for i, prefix in enumerate(_PREFIXES):
        for kind in (kinds[i % len(kinds)], kinds[(i * 5 + 3) % len(kinds)]):
            sector, product = _KINDS[kind]
            out.append(_Company(f"{prefix} {kind}", kind, sector, product, rng.choice(_CITIES)))
    return out


# -- document templates ----------------------------------------------------------------------------
# Each generator returns (topic, title, paragraphs). ``f`` holds the facts one document is about.


def _acquisition(f: dict) -> tuple[str, str, list[str]]:
    a, b = f["a"], f["b"]
    title = f"{a.name} to acquire {b.name} for ${f['amount']} million"
    return (
        "deal",
        title,
        [
            f"{a.name} has agreed to acquire {b.name} for ${f['amount']} million in cash and stock, the "
            f"companies said in {f['month']} {f['year']}. The deal values {b.name} at {f['multiple']} times "
            f"its annual revenue. {b.name}, based in {b.city}, makes {b.product} for customers in {f['region']}.",
            f"{a.name} said the acquisition strengthens its position in {b.sector} and brings {f['tech']} "
            f"expertise in house. Chief executive {f['person']} expects the combined company to save "
            f"${f['savings']} million a year by {int(f['year']) + 2}.",
            f"Analysts called the price for {b.name} {f['view']}. The acquisition of {b.name} needs approval "
            f"from competition regulators in {f['region']} and is expected to close in {f['close']}.",
            f"The deal is the {f['ordinal']} acquisition by {a.name} this year, as {a.sector} companies "
            f"consolidate. Shares of {a.name} {f['move']} {f['pct']}% after the announcement.",
        ],
    )


def _funding(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    title = f"{a.name} raises ${f['amount']} million Series {f['series']} led by {f['investor']}"
    return (
        "funding",
        title,
        [
            f"{a.name}, a {a.sector} startup from {a.city}, raised ${f['amount']} million in a Series "
            f"{f['series']} funding round led by {f['investor']} in {f['month']} {f['year']}. The round "
            f"values {a.name} at about ${f['valuation']} million.",
            f"{a.name} sells {a.product} and says revenue grew {f['pct']}% last year. The company will spend "
            f"the new funding on {f['tech']} research and on expansion into {f['region']}.",
            f'"Demand for {a.product} is outpacing what we can deliver," said {f["person"]}, chief '
            f"executive of {a.name}. Investors in {a.sector} have become {f['mood']} this year, with fewer "
            f"but larger funding rounds.",
        ],
    )


def _earnings(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    direction = "rises" if f["up"] else "falls"
    title = f"{a.name} {f['quarter']} {f['year']} results: revenue {direction} {f['pct']}%"
    change = "increased" if f["up"] else "decreased"
    return (
        "earnings",
        title,
        [
            f"{a.name} reported {f['quarter']} {f['year']} revenue of ${f['amount']} million, which "
            f"{change} {f['pct']}% from a year earlier. Operating margin was {f['margin']}%.",
            f"Sales of {a.product} in {f['region']} drove the quarter, the company said. {a.name} "
            f"{'raised' if f['up'] else 'cut'} its full-year revenue guidance and now expects growth of "
            f"{f['guide']}%.",
            f"Chief financial officer {f['person']} said spending on {f['tech']} will continue. Shares of "
            f"{a.name} {f['move']} {f['pct2']}% in after-hours trading as the {a.sector} market {f['trend']}.",
        ],
    )


def _launch(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    product = f"{a.name.split()[0]} {f['series_name']}"
    title = f"{a.name} launches {product} built on {f['tech']}"
    return (
        "technology",
        title,
        [
            f"{a.name} launched {product}, a new line of {a.product} built on {f['tech']}, at an event "
            f"in {a.city} in {f['month']} {f['year']}.",
            f"The company says {product} cuts costs by {f['pct']}% compared with its previous generation. "
            f"Early customers in {f['region']} include hospitals, retailers and logistics firms.",
            f"{f['person']}, who leads product at {a.name}, said {f['tech']} is moving from pilots to "
            f"production across {a.sector}. Competitors including {f['b'].name} are expected to respond "
            f"with their own {f['tech']} products.",
        ],
    )


def _partnership(f: dict) -> tuple[str, str, list[str]]:
    a, b = f["a"], f["b"]
    title = f"{a.name} and {b.name} partner on {f['tech']}"
    return (
        "deal",
        title,
        [
            f"{a.name} and {b.name} announced a partnership to develop {f['tech']} for {a.sector} and "
            f"{b.sector} customers in {f['region']}, starting in {f['month']} {f['year']}.",
            f"Under the agreement {a.name} brings its {a.product} and {b.name} contributes {b.product}. "
            f"The companies will invest ${f['amount']} million over three years.",
            f"Analysts said the partnership lets both companies compete with larger rivals without an "
            f"acquisition. {f['person']} of {b.name} said joint customers were already testing the work.",
        ],
    )


def _leadership(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    title = f"{a.name} names {f['person']} chief {f['role']} officer"
    return (
        "companies",
        title,
        [
            f"{a.name} appointed {f['person']} as chief {f['role']} officer in {f['month']} {f['year']}. "
            f"{f['person']} previously worked at {f['b'].name}, where she led the {f['tech']} division.",
            f"The appointment follows a year in which {a.name} {f['move']} its market share in {a.sector} "
            f"by {f['pct']}%. The company employs about {f['staff']} people, most of them in {a.city}.",
            f"{a.name} said the new chief {f['role']} officer will focus on growth in {f['region']} and on "
            f"{a.product}.",
        ],
    )


def _regulation(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    title = f"Regulators in {f['region']} open inquiry into {a.name}"
    return (
        "markets",
        title,
        [
            f"Competition regulators in {f['region']} opened an inquiry into {a.name} in {f['month']} "
            f"{f['year']}, examining its pricing of {a.product}.",
            f"The inquiry follows complaints from smaller {a.sector} companies, including {f['b'].name}. "
            f"{a.name} could face fines of up to {f['pct']}% of its revenue in {f['region']} if found in breach.",
            f"{a.name} said it would cooperate with the regulators and that its {a.product} prices reflect "
            f"rising costs of {f['tech']}. A decision is expected in {f['close']}.",
        ],
    )


def _ipo(f: dict) -> tuple[str, str, list[str]]:
    a = f["a"]
    title = f"{a.name} files for IPO on {f['exchange']}"
    return (
        "markets",
        title,
        [
            f"{a.name} filed for an initial public offering on {f['exchange']} in {f['month']} {f['year']}, "
            f"seeking to raise about ${f['amount']} million.",
            f"The filing shows revenue of ${f['valuation']} million last year, up {f['pct']}%, from "
            f"{a.product} sold mainly in {f['region']}. {a.name} is backed by {f['investor']}.",
            f"The IPO would be one of the largest in {a.sector} this year. Bankers say investors "
            f"are {f['mood']} about {f['tech']} companies after a volatile year on {f['exchange']}.",
        ],
    )


def _market(f: dict) -> tuple[str, str, list[str]]:
    sector, region = f["a"].sector, f["region"]
    title = f"{sector.capitalize()} market in {region}: {f['trend']}"
    return (
        "markets",
        title,
        [
            f"The {sector} market in {region} grew {f['pct']}% in {f['year']} to about ${f['amount']} "
            f"million, according to industry estimates, as {f['trend']}.",
            f"{f['a'].name} and {f['b'].name} are among the largest suppliers of {f['a'].product} in "
            f"{region}. Prices for {f['a'].product} {f['move']} {f['pct2']}% over the year.",
            f"Analysts expect {f['tech']} to shape the next phase of the {sector} market, with "
            f"{f['deals']} acquisitions recorded in {region} in {f['year']}.",
        ],
    )


def _explainer(f: dict) -> tuple[str, str, list[str]]:
    tech, sector = f["tech"], f["a"].sector
    title = f"How {tech} is changing {sector}"
    return (
        "technology",
        title,
        [
            f"{tech.capitalize()} has moved from research labs into {sector}, where companies such as "
            f"{f['a'].name} use it to make {f['a'].product} cheaper and faster.",
            f"Adoption is fastest in {f['region']}, where about {f['pct']}% of {sector} firms run "
            f"{tech} in production. The main obstacles are cost, skills and regulation.",
            f"Investors put ${f['amount']} million into {tech} startups in {f['year']}, led by "
            f"{f['investor']}. {f['person']}, an analyst in {f['a'].city}, expects {tech} spending in "
            f"{sector} to double within three years.",
        ],
    )


_GENERATORS = [
    (_acquisition, 0.18),
    (_funding, 0.14),
    (_earnings, 0.16),
    (_launch, 0.12),
    (_partnership, 0.10),
    (_leadership, 0.07),
    (_regulation, 0.07),
    (_ipo, 0.06),
    (_market, 0.05),
    (_explainer, 0.05),
]


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80].rstrip("-")


def _generate(seed: int, size: int) -> list[Document]:
    rng = random.Random(seed)
    companies = _companies(rng)
    generators = [g for g, _ in _GENERATORS]
    weights = [w for _, w in _GENERATORS]
    docs: list[Document] = []
    seen: set[str] = set()
    for _ in range(size):
        a, b = rng.sample(companies, 2)
        year = str(rng.choice([2023, 2024, 2025]))
        facts = {
            "a": a,
            "b": b,
            "amount": rng.choice([12, 25, 40, 75, 120, 180, 250, 420, 650, 900, 1300, 2100]),
            "valuation": rng.choice([150, 300, 480, 800, 1200, 2500]),
            "savings": rng.choice([5, 10, 20, 35, 60]),
            "multiple": rng.choice([3, 4, 6, 8, 11]),
            "pct": rng.choice([3, 5, 8, 12, 15, 18, 22, 27, 34, 41]),
            "pct2": rng.choice([2, 4, 6, 9, 11, 14]),
            "margin": rng.choice([-8, -3, 4, 9, 14, 21, 28]),
            "guide": rng.choice([2, 5, 7, 10, 14, 20]),
            "staff": rng.choice([80, 240, 600, 1500, 4200, 9800]),
            "deals": rng.choice([4, 7, 12, 19, 26]),
            "up": rng.random() < 0.6,
            "month": rng.choice(_MONTHS),
            "year": year,
            "quarter": rng.choice(["Q1", "Q2", "Q3", "Q4"]),
            "region": rng.choice(_REGIONS),
            "tech": rng.choice(_TECH),
            "person": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            "investor": rng.choice(_INVESTORS),
            "role": rng.choice(_ROLES),
            "series": rng.choice("ABCD"),
            "series_name": rng.choice(["One", "Pro", "Edge", "Atlas", "Nova", "Flux", "Core", "Apex"]),
            "exchange": rng.choice(_EXCHANGES),
            "trend": rng.choice(_TRENDS),
            "view": rng.choice(["full", "reasonable", "a bargain", "steep", "aggressive"]),
            "close": rng.choice(["the first half of next year", "the fourth quarter", "about six months"]),
            "ordinal": rng.choice(["second", "third", "fourth"]),
            "move": rng.choice(["rose", "fell", "gained", "lost"]),
            "mood": rng.choice(["cautious", "selective", "optimistic", "enthusiastic"]),
        }
        topic, title, paragraphs = rng.choices(generators, weights)[0](facts)
        slug = _slug(title)
        if slug in seen:
            slug = f"{slug}-{len(docs)}"
        seen.add(slug)
        published = f"{year}-{_MONTHS.index(facts['month']) + 1:02d}-{rng.randint(1, 28):02d}"
        docs.append(Document(CORPUS_BASE_URL + slug, title, "\n\n".join(paragraphs), published, topic))
    return docs


# -- search ----------------------------------------------------------------------------------------


class Corpus:
    """Documents by URL plus a BM25 index over their words.

    Everything that depends only on the documents is computed here, once: each word's BM25 weight
    in each document, the documents' order by URL (the tie-break) and their sentences with their
    words (for snippets). A search then only adds up weights and compares small word sets.
    """

    _K1 = 1.2
    _B = 0.75

    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        self._by_url = {d.url: d for d in documents}
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)  # word -> [(document, tf)]
        lengths: list[int] = []
        for i, doc in enumerate(documents):
            words = content_words(doc.title) * 2 + content_words(doc.text)
            lengths.append(len(words))
            for word, tf in Counter(words).items():
                postings[word].append((i, tf))
        n = len(documents)
        average = sum(lengths) / max(n, 1)
        # word -> [(document, BM25 weight of the word in it)]
        self._weights: dict[str, list[tuple[int, float]]] = {}
        for word, posting in postings.items():
            idf = math.log(1 + (n - len(posting) + 0.5) / (len(posting) + 0.5))
            self._weights[word] = [(i, self._bm25(idf, tf, lengths[i], average)) for i, tf in posting]
        by_url = sorted(range(n), key=lambda i: documents[i].url)
        self._url_rank = [0] * n
        for rank, i in enumerate(by_url):
            self._url_rank[i] = rank
        self._sentences = [sentence_words(doc.text) for doc in documents]

    @classmethod
    def _bm25(cls, idf: float, tf: int, length: int, average: float) -> float:
        norm = tf + cls._K1 * (1 - cls._B + cls._B * length / average)
        return idf * tf * (cls._K1 + 1) / norm

    def __len__(self) -> int:
        return len(self.documents)

    def get(self, url: str) -> Document | None:
        return self._by_url.get(url) or self._by_url.get(url.rstrip("/"))

    def search(self, query: str, *, count: int = 10, offset: int = 0) -> tuple[int, list[SearchHit]]:
        """``(total matching documents, hits[offset:offset + count])``, best first, ties by URL."""
        words = set(content_words(query))
        scores: dict[int, float] = defaultdict(float)
        for word in words:
            for i, weight in self._weights.get(word, ()):
                scores[i] += weight
        # Sort plain tuples rather than call a key function per document: (-score, URL order) is
        # the ranking; URLs are unique (``_generate`` dedupes slugs), so the index never decides.
        url_rank = self._url_rank
        ranked = sorted((-score, url_rank[i], i) for i, score in scores.items())
        hits = [
            SearchHit(self.documents[i], round(-negated, 4), _snippet(self._sentences[i], words))
            for negated, _, i in ranked[offset : offset + count]
        ]
        return len(ranked), hits


def _snippet(
    document_sentences: tuple[tuple[str, frozenset[str]], ...], query_words: set[str], limit: int = 240
) -> str:
    """The first of the sentences sharing the most words with the query, cut to ``limit`` characters."""
    overlaps = [len(query_words & words) for _, words in document_sentences]
    best = document_sentences[overlaps.index(max(overlaps))][0]
    return best if len(best) <= limit else best[: limit - 1].rsplit(" ", 1)[0] + "…"


@cache
def corpus() -> Corpus:
    """The bundled corpus, built and indexed once per process on first use."""
    return Corpus(_generate(CORPUS_SEED, CORPUS_SIZE))
