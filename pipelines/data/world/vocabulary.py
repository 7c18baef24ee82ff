"""The words of the synthetic world: topics and their tags, title and summary templates, languages,
time zones, and the ids of users and posts. Constants only; nothing here draws random numbers."""

from __future__ import annotations

TOPIC_TAGS: tuple[tuple[str, ...], ...] = (
    ("python", "django", "fastapi", "pandas", "asyncio"),
    ("javascript", "react", "nodejs", "typescript", "vite"),
    ("rust", "cargo", "tokio", "wasm", "memory-safety"),
    ("go", "goroutines", "grpc", "kubernetes-operators", "gin"),
    ("machine-learning", "pytorch", "tensorflow", "llm", "mlops"),
    ("devops", "docker", "kubernetes", "terraform", "ci-cd"),
    ("databases", "postgres", "sql", "duckdb", "indexing"),
    ("security", "oauth", "cryptography", "supply-chain", "cve"),
    ("frontend", "css", "accessibility", "web-performance", "design-systems"),
    ("cloud", "gcp", "aws", "serverless", "bigquery"),
    ("mobile", "kotlin", "swift", "flutter", "android"),
    ("career", "interviews", "remote-work", "management", "open-source"),
    ("data-engineering", "airflow", "spark", "kafka", "dbt"),
    ("game-dev", "unity", "godot", "shaders", "physics"),
    ("systems", "linux", "ebpf", "compilers", "performance"),
    ("testing", "pytest", "property-testing", "fuzzing", "tdd"),
)
TITLE_TEMPLATES: tuple[str, ...] = (
    "How we scaled {a} to millions of requests",
    "A practical guide to {a} and {b}",
    "Why {a} beats {b} for most teams",
    "{a} in 2026: what changed",
    "Debugging {a}: lessons from production",
    "Ten {a} tips nobody told you",
    "Building a {a} pipeline with {b}",
    "The hidden cost of {a}",
    "From zero to {a}: a weekend project",
    "Understanding {a} internals",
    "{a} vs {b}: benchmarks and trade-offs",
    "Release notes: {a} gets faster {b} support",
)
SUMMARY_TEMPLATES: tuple[str, ...] = (
    "We walk through {a} step by step and show where {b} fits in.",
    "A hands-on look at {a}, with code, numbers and the mistakes we made.",
    "What the {a} community learned this year, and what it means for {b}.",
    "Short answer: it depends. Long answer: {a}, {b} and a lot of profiling.",
)
LANGUAGES: tuple[str, ...] = ("en", "de", "es", "fr", "pt")
LANGUAGE_WEIGHTS: tuple[float, ...] = (0.82, 0.06, 0.05, 0.04, 0.03)
TIMEZONES: tuple[str, ...] = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
SPICE: tuple[str, ...] = ("", "", "", "", " 🚀", " — résumé", " (naïve approach)", " ✨")


def user_id(index: int) -> str:
    """The id of the user with index ``index``."""
    return f"u{int(index):07d}"


def item_id(index: int) -> str:
    """The id of the post with index ``index``."""
    return f"p{int(index):07d}"
