"""Lineage of one run: the warehouse tables and lake datasets it read and wrote, recorded as they are used.

The lake records the datasets whose manifest it read and the ones it published; the warehouse records
the tables its SQL referenced and the ones it materialised or loaded. Names follow OpenLineage's naming:
a namespace (``bigquery``, ``duckdb://<file>``, ``gs://<bucket>``, ``file``) and a name in it. The
Airflow runtime turns a task's lineage into OpenLineage events; nothing here knows of Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DatasetName = tuple[str, str]
"""(namespace, name) of a table or dataset."""


@dataclass
class Lineage:
    """What one run read and wrote, each in first-use order and named once."""

    inputs: dict[DatasetName, None] = field(default_factory=dict)
    outputs: dict[DatasetName, None] = field(default_factory=dict)

    def read(self, namespace: str, name: str) -> None:
        self.inputs.setdefault((namespace, name), None)

    def wrote(self, namespace: str, name: str) -> None:
        self.outputs.setdefault((namespace, name), None)

    def to_dict(self) -> dict[str, Any]:
        """``{"inputs": [{"namespace", "name"}, …], "outputs": […]}``."""
        return {
            side: [{"namespace": ns, "name": name} for ns, name in names]
            for side, names in (("inputs", self.inputs), ("outputs", self.outputs))
        }
