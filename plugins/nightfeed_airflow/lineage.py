"""OpenLineage for Nightfeed's tasks: each task's events name the warehouse tables and lake datasets its job
read and wrote, as ``pipelines`` recorded them while it ran (:mod:`pipelines.core.lineage`).

:func:`task_lineage` gives the runtime the recorder of the running task; :class:`JobLineageExtractor` is
registered with the OpenLineage provider (``[openlineage] extractors``, set in ``airflow.env``) for
TaskFlow tasks and turns that record into the task's inputs and outputs when the provider's listener
reports the task's end, in the same process. Without a transport configured the provider sends nothing.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.openlineage.extractors import BaseExtractor, OperatorLineage

from pipelines.core.lineage import Lineage

# The recorders of the tasks run in this process, until the listener reports their end.
_RECORDED: dict[tuple[Any, ...], Lineage] = {}


def _key(ti: Any) -> tuple[Any, ...]:
    return (ti.dag_id, ti.task_id, ti.run_id, ti.map_index, ti.try_number)


def task_lineage(context: Any) -> Lineage:
    """A fresh recorder for the running task (its try), kept for the OpenLineage extractor."""
    lineage = Lineage()
    _RECORDED[_key(context["ti"])] = lineage
    return lineage


class JobLineageExtractor(BaseExtractor):
    """The inputs and outputs of a Nightfeed job task: the tables and datasets its job touched."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self) -> OperatorLineage | None:
        # Before the task runs nothing has been touched yet.
        return None

    def extract_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """What the task's job read and wrote (None for a task that ran no job)."""
        from openlineage.client.event_v2 import Dataset

        lineage = _RECORDED.pop(_key(task_instance), None)
        if lineage is None:
            return None
        return OperatorLineage(
            inputs=[Dataset(namespace=ns, name=name) for ns, name in lineage.inputs],
            outputs=[Dataset(namespace=ns, name=name) for ns, name in lineage.outputs],
        )
