"""The SQL catalog: every file under ``sql/`` with its contract, and the run order of the models.

``sql/models/**.sql`` are materialised tables (partitioned by ``ds``), ``sql/queries/**.sql`` are read
and never stored, ``sql/sources/*.yml`` describe the raw input tables. Each SQL file has a contract of the
same name ending in ``.yml``: a description, ``materialized`` (``table`` or ``query``), ``partition_by``,
an optional ``audit`` run right after the model, and its columns with BigQuery types and descriptions.
The order models are built in comes from their ``ref()`` calls (a topological sort), never from a list.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
MODELS_DIR = "models"
QUERIES_DIR = "queries"
SOURCES_DIR = "sources"

_REF_RE = re.compile(r"\bref\(\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*\)")
_MATERIALIZED = {MODELS_DIR: "table", QUERIES_DIR: "query", SOURCES_DIR: "source"}
_SCALARS: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "INT64": pa.int64(),
    "FLOAT64": pa.float64(),
    "BOOL": pa.bool_(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}


class SqlContractError(ValueError):
    """A SQL file or its contract is missing, malformed, or refers to a table that does not exist."""


def arrow_type(bigquery_type: str) -> pa.DataType:
    """The Arrow type of a BigQuery column type (``STRING``, ``ARRAY<FLOAT64>``, ...).

    Raises:
        SqlContractError: a type the contracts do not use.
    """
    if bigquery_type.startswith("ARRAY<") and bigquery_type.endswith(">"):
        return pa.list_(arrow_type(bigquery_type[len("ARRAY<") : -1]))
    if bigquery_type not in _SCALARS:
        raise SqlContractError(f"unknown column type {bigquery_type!r}; expected one of {sorted(_SCALARS)}")
    return _SCALARS[bigquery_type]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str


@dataclass(frozen=True)
class SqlFile:
    """One table or query with its contract.

    Attributes:
        name: a model's table name (its file stem), a query's path below ``sql/queries`` without
            ``.sql`` (``serving/items``), a source's table name.
        path: the SQL file relative to ``sql/`` (None for a source, which has no SQL).
        materialized: ``table``, ``query`` or ``source``.
        partitioned: replaced one ``ds`` partition at a time (models and sources with ``partition_by``).
        columns: the output columns, in order.
        refs: the tables the SQL reads through ``ref()``.
        audit: the name of a check to run right after the model is built, before anything reads it.
        description: what the rows are.
    """

    name: str
    path: str | None
    materialized: str
    partitioned: bool
    columns: tuple[Column, ...]
    refs: tuple[str, ...]
    audit: str | None
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def arrow_schema(self) -> pa.Schema:
        """The columns as an Arrow schema (what loaders check and convert rows to)."""
        return pa.schema([pa.field(c.name, arrow_type(c.type)) for c in self.columns])


@dataclass(frozen=True)
class SqlCatalog:
    """Every model (in run order), query and source under one ``sql/`` folder."""

    models: tuple[SqlFile, ...]
    queries: dict[str, SqlFile]
    sources: dict[str, SqlFile]

    def model(self, name: str) -> SqlFile:
        for model in self.models:
            if model.name == name:
                return model
        raise SqlContractError(
            f"no model {name!r} in sql/{MODELS_DIR}; models: {[m.name for m in self.models]}"
        )

    def query(self, name: str) -> SqlFile:
        if name not in self.queries:
            known = sorted(self.queries)
            raise SqlContractError(f"no query {name!r} in sql/{QUERIES_DIR}; queries: {known}")
        return self.queries[name]

    def source(self, name: str) -> SqlFile:
        if name not in self.sources:
            raise SqlContractError(
                f"no source {name!r} in sql/{SOURCES_DIR}; sources: {sorted(self.sources)}"
            )
        return self.sources[name]


def _contract(path: Path, root: Path) -> dict:
    rel = path.relative_to(root)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SqlContractError(f"sql/{rel}: cannot read the contract: {exc}") from exc
    if not isinstance(doc, dict):
        raise SqlContractError(f"sql/{rel}: the contract must be a mapping")
    expected = _MATERIALIZED[rel.parts[0]]
    if doc.get("materialized") != expected:
        raise SqlContractError(
            f"sql/{rel}: materialized must be {expected!r}, got {doc.get('materialized')!r}"
        )
    columns = doc.get("columns")
    if not isinstance(columns, list) or not columns:
        raise SqlContractError(f"sql/{rel}: the contract lists no columns")
    for i, column in enumerate(columns):
        if not isinstance(column, dict) or not {"name", "type", "description"} <= set(column):
            raise SqlContractError(f"sql/{rel}: column {i} needs a name, a type and a description")
        arrow_type(column["type"])
    return doc


def _sql_file(contract_path: Path, root: Path, name: str, sql_path: Path | None) -> SqlFile:
    doc = _contract(contract_path, root)
    refs: tuple[str, ...] = ()
    if sql_path is not None:
        if not sql_path.is_file():
            raise SqlContractError(f"sql/{contract_path.relative_to(root)} has no SQL file beside it")
        refs = tuple(dict.fromkeys(_REF_RE.findall(sql_path.read_text())))
    return SqlFile(
        name=name,
        path=str(sql_path.relative_to(root)) if sql_path else None,
        materialized=doc["materialized"],
        partitioned=doc.get("partition_by") == "ds",
        columns=tuple(Column(c["name"], c["type"], c["description"]) for c in doc["columns"]),
        refs=refs,
        audit=doc.get("audit"),
        description=str(doc.get("description", "")),
    )


def run_order(models: Iterable[SqlFile], sources: Iterable[str]) -> tuple[SqlFile, ...]:
    """``models`` in an order where every model comes after the models it refs (ties by path).

    Raises:
        SqlContractError: a ref names no model and no source, or refs form a cycle.
    """
    by_name = {m.name: m for m in models}
    known = set(by_name) | set(sources)
    for model in by_name.values():
        missing = [ref for ref in model.refs if ref not in known]
        if missing:
            raise SqlContractError(f"sql/{model.path}: ref() to unknown tables {missing}")
    waiting = {name: {r for r in m.refs if r in by_name and r != name} for name, m in by_name.items()}
    for name, model in by_name.items():
        if name in model.refs:
            raise SqlContractError(f"sql/{model.path}: a model cannot ref() itself")
    ordered: list[SqlFile] = []
    while waiting:
        ready = sorted((by_name[n] for n, deps in waiting.items() if not deps), key=lambda m: m.path or "")
        if not ready:
            raise SqlContractError(f"ref() cycle among models {sorted(waiting)}")
        for model in ready:
            ordered.append(model)
            del waiting[model.name]
        for deps in waiting.values():
            deps.difference_update(m.name for m in ready)
    return tuple(ordered)


def load_catalog(root: Path = SQL_DIR) -> SqlCatalog:
    """Read every contract under ``root``.

    Raises:
        SqlContractError: a SQL file without a contract (or the reverse), a malformed contract, a ref to an
            unknown table, a ref cycle, or two models of the same name.
    """
    if root == SQL_DIR:
        return _default_catalog()
    return _load(root)


@functools.cache
def _default_catalog() -> SqlCatalog:
    return _load(SQL_DIR)


def _load(root: Path) -> SqlCatalog:
    sources = {p.stem: _sql_file(p, root, p.stem, None) for p in sorted((root / SOURCES_DIR).glob("*.yml"))}
    files: dict[str, list[SqlFile]] = {MODELS_DIR: [], QUERIES_DIR: []}
    for kind in files:
        for sql in sorted((root / kind).rglob("*.sql")):
            contract = sql.with_suffix(".yml")
            if not contract.is_file():
                raise SqlContractError(
                    f"sql/{sql.relative_to(root)} has no contract {contract.name} beside it"
                )
            rel = sql.relative_to(root / kind).with_suffix("")
            name = rel.name if kind == MODELS_DIR else rel.as_posix()
            files[kind].append(_sql_file(contract, root, name, sql))
        for contract in sorted((root / kind).rglob("*.yml")):
            if not contract.with_suffix(".sql").is_file():
                raise SqlContractError(f"sql/{contract.relative_to(root)} has no SQL file beside it")
    names = [m.name for m in files[MODELS_DIR]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SqlContractError(f"models named twice in sql/{MODELS_DIR}: {twice}")
    queries = {q.name: q for q in files[QUERIES_DIR]}
    for query in queries.values():
        missing = [r for r in query.refs if r not in set(names) | set(sources)]
        if missing:
            raise SqlContractError(f"sql/{query.path}: ref() to unknown tables {missing}")
    return SqlCatalog(run_order(files[MODELS_DIR], sources), queries, sources)
