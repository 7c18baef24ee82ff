"""The SQL catalog: contracts beside every SQL file, and a run order that comes from ``ref()`` alone."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.core.schema import RAW_SCHEMAS
from pipelines.core.sql_catalog import SqlContractError, arrow_type, load_catalog


def write(
    root: Path, rel: str, sql: str | None = None, columns: str = "  - {name: x, type: INT64, description: x}"
) -> None:
    """A SQL file and its contract under ``root`` (``rel`` without suffix, e.g. ``models/a``)."""
    kind = {"models": "table", "queries": "query", "sources": "source"}[rel.split("/")[0]]
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".yml").write_text(
        f"description: d\nmaterialized: {kind}\npartition_by: ds\ncolumns:\n{columns}\n"
    )
    if sql is not None:
        path.with_suffix(".sql").write_text(sql)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path, "sources/raw_a")
    return tmp_path


def test_models_run_after_every_model_they_ref() -> None:
    catalog = load_catalog()
    position = {model.name: i for i, model in enumerate(catalog.models)}
    assert len(position) == 11
    for model in catalog.models:
        for ref in model.refs:
            if ref in position:
                assert position[ref] < position[model.name], (model.name, ref)


def test_the_quality_gate_runs_before_every_model_that_reads_usable_rows() -> None:
    catalog = load_catalog()
    names = [model.name for model in catalog.models]
    gate = next(model.name for model in catalog.models if model.audit == "quality_gate")
    # Only the checks themselves (checked_*) and the quarantine may run before the gate passes.
    before = names[: names.index(gate)]
    assert before == ["checked_events", "checked_items", "checked_users"]


def test_run_order_follows_refs_not_file_names(root: Path) -> None:
    write(root, "models/a_last", "select * from {{ ref('z_first') }}")
    write(root, "models/z_first", "select * from {{ ref('raw_a') }}")
    assert [m.name for m in load_catalog(root).models] == ["z_first", "a_last"]


def test_a_ref_to_an_unknown_table_fails(root: Path) -> None:
    write(root, "models/a", "select * from {{ ref('nowhere') }}")
    with pytest.raises(SqlContractError, match=r"sql/models/a.sql: ref\(\) to unknown tables \['nowhere'\]"):
        load_catalog(root)


def test_a_query_with_an_unknown_ref_fails(root: Path) -> None:
    write(root, "queries/serving/q", "select * from {{ ref('nowhere') }}")
    with pytest.raises(SqlContractError, match=r"sql/queries/serving/q.sql: ref\(\) to unknown tables"):
        load_catalog(root)


def test_a_ref_cycle_fails(root: Path) -> None:
    write(root, "models/a", "select * from {{ ref('b') }}")
    write(root, "models/b", "select * from {{ ref('a') }}")
    with pytest.raises(SqlContractError, match=r"ref\(\) cycle among models \['a', 'b'\]"):
        load_catalog(root)


def test_a_sql_file_without_a_contract_fails(root: Path) -> None:
    (root / "models").mkdir()
    (root / "models" / "a.sql").write_text("select 1 as x")
    with pytest.raises(SqlContractError, match=r"sql/models/a.sql has no contract a.yml"):
        load_catalog(root)


def test_a_contract_with_an_unknown_type_fails(root: Path) -> None:
    write(root, "models/a", "select 1 as x", columns="  - {name: x, type: NUMBER, description: x}")
    with pytest.raises(SqlContractError, match="unknown column type 'NUMBER'"):
        load_catalog(root)


def test_raw_table_schemas_are_read_from_the_source_contracts() -> None:
    sources = load_catalog().sources
    assert set(RAW_SCHEMAS) == set(sources) == {"raw_events", "raw_items", "raw_users"}
    assert RAW_SCHEMAS["raw_items"].field("tags").type == pa.list_(pa.string())
    assert RAW_SCHEMAS["raw_events"].field("event_ts").type == pa.timestamp("us", tz="UTC")
    assert arrow_type("ARRAY<FLOAT64>") == pa.list_(pa.float64())
