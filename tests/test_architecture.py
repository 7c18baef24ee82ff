"""The layering of ``pipelines/`` and the thin-DAG rule, checked on the source (every import, lazy ones too).

Layers, lowest first: core < data < training < serving < evaluation < delivery < jobs < cli. A module may
import its own layer and lower ones. Training never imports serving (a lower layer cannot) and serving
never imports the feature step (``pipelines.data``), although it sits above it. Nothing in
``pipelines/`` imports Airflow. DAG files read only the job catalog and the run params from ``pipelines``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipelines.core import jobs

REPO = Path(__file__).resolve().parent.parent
PIPELINES = REPO / "pipelines"
LAYERS: tuple[str, ...] = ("core", "data", "training", "serving", "evaluation", "delivery", "jobs", "cli")
# (importer layer, imported layer) pairs that the layer order alone would allow but the design forbids.
FORBIDDEN: tuple[tuple[str, str], ...] = (("serving", "data"),)
DAG_MAY_IMPORT = ("pipelines.core.jobs", "pipelines.core.params")
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a ``pipelines`` module (None for the package root and ``__main__``)."""
    parts = module.split(".")
    if parts[0] != "pipelines" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def imported_modules(source: str, module: str) -> list[tuple[str, int]]:
    """Every module ``source`` imports, anywhere in the file, with its line number."""
    found: list[tuple[str, int]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base])
            found.append((base, node.lineno))
            # ``from pipelines import training`` imports the submodule.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names if base == "pipelines"]
    return found


def violations(source: str, module: str) -> list[str]:
    """The import rules ``source`` (the text of ``module``) breaks, one line each."""
    own = layer(module)
    out = []
    for name, line in imported_modules(source, module):
        if name.split(".")[0] == "airflow":
            out.append(f"{module}:{line} imports {name}: pipelines/ never imports Airflow")
        target = layer(name)
        if own is None or target is None:
            continue
        if LAYERS.index(target) > LAYERS.index(own):
            out.append(f"{module}:{line} imports {name}: {own} may not import the higher layer {target}")
        if (own, target) in FORBIDDEN:
            out.append(f"{module}:{line} imports {name}: {own} may not import {target}")
    return out


PIPELINE_FILES = sorted(PIPELINES.rglob("*.py"))


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down_the_layers(path: Path) -> None:
    assert violations(path.read_text(), module_name(path)) == []


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        ("pipelines.training.ranker.train", "from pipelines.serving.sharding import shard_of", "higher"),
        ("pipelines.core.lake", "def f():\n    import pipelines.jobs\n", "higher layer"),
        ("pipelines.serving.inputs", "from pipelines.data.features import build_features", "serving may not"),
        ("pipelines.data.world", "from airflow.sdk import dag", "never imports Airflow"),
        ("pipelines.core.settings", "from pipelines import training", "higher layer"),
    ],
)
def test_the_check_catches_a_forbidden_import(module: str, source: str, broken: str) -> None:
    found = violations(source, module)
    assert found and broken in found[0]


def test_the_check_allows_downward_and_same_layer_imports() -> None:
    source = "from pipelines.core.lake import Lake\nfrom pipelines.serving.sharding import shard_of\n"
    assert violations(source, "pipelines.delivery.digests") == []
    assert violations("from pipelines.training import registry", "pipelines.serving.embeddings") == []


@pytest.mark.parametrize("path", PIPELINE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_is_longer_than_the_limit(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines; split it by concept"


@pytest.mark.parametrize("path", sorted((REPO / "dags").glob("*.py")), ids=lambda p: p.name)
def test_dag_files_read_only_the_catalogs_from_pipelines(path: Path) -> None:
    for name, line in imported_modules(path.read_text(), "dags." + path.stem):
        if name.split(".")[0] == "pipelines" and name != "pipelines.core":
            assert name in DAG_MAY_IMPORT, f"{path.name}:{line} imports {name}"


def _catalog_references(source: str) -> list[tuple[str, int]]:
    """Names read from the job catalog: ``jobs.X`` where ``jobs`` is ``pipelines.core.jobs``, and
    ``from pipelines.core.jobs import X``."""
    tree = ast.parse(source)
    aliases = set()
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pipelines.core":
            aliases |= {a.asname or a.name for a in node.names if a.name == "jobs"}
        if isinstance(node, ast.ImportFrom) and node.module == "pipelines.core.jobs":
            names += [(a.name, node.lineno) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            names.append((node.attr, node.lineno))
    return names


CALLERS = sorted(
    p
    for folder in ("pipelines", "dags", "plugins", "bench", "tests")
    for p in (REPO / folder).rglob("*.py")
    if p != Path(__file__)
)


@pytest.mark.parametrize("path", CALLERS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_job_a_dag_cli_or_report_names_exists(path: Path) -> None:
    for name, line in _catalog_references(path.read_text()):
        assert hasattr(jobs, name), f"{path.relative_to(REPO)}:{line} names {name}, not in the job catalog"


def test_the_reference_check_sees_a_misspelt_job() -> None:
    source = "from pipelines.core import jobs\nrun(jobs.EXPORT_INPUT)\n"
    assert ("EXPORT_INPUT", 2) in _catalog_references(source) and not hasattr(jobs, "EXPORT_INPUT")
