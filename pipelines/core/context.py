"""The run context: what every job gets, built once where a run enters (DAG runtime, CLI, tests).

It carries the run date as a checked :class:`datetime.date`, the settings with the run's overrides
applied, the lake, a way to open the warehouse, and who holds the night's lease (the Airflow DAG run, or
this process on the command line).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake, ScratchLake
from pipelines.core.lineage import Lineage
from pipelines.core.night import process_holder
from pipelines.core.params import overrides_from_params
from pipelines.core.paths import LakePaths
from pipelines.core.run_date import parse_run_date
from pipelines.core.settings import Settings, load_settings
from pipelines.core.warehouse import Warehouse, open_warehouse


class BadRunParameters(PermanentError, ValueError):
    """A run parameter or settings override is unknown or out of range."""


def settings_with(params: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment with the run params' overrides applied.

    Raises:
        BadRunParameters: an override is unknown or out of range.
    """
    from pydantic import ValidationError

    try:
        return load_settings().with_overrides(overrides_from_params(params))
    except ValidationError as exc:
        raise BadRunParameters(f"invalid run parameters: {exc}") from exc


@dataclass(frozen=True)
class RunContext:
    """One run of one date: ``ds``, the settings in force, the lake, and the warehouse on demand.

    ``credentials`` are the Google credentials the lake and BigQuery use, when the caller has some (the
    Airflow runtime passes those of its ``google_cloud_default`` connection); None means Google's
    application-default credentials.
    """

    ds: dt.date
    settings: Settings
    lake: Lake
    holder: str
    credentials: Any | None = None
    lineage: Lineage = field(default_factory=Lineage)

    @classmethod
    def create(
        cls,
        ds: str | dt.date,
        params: Mapping[str, Any] | None = None,
        credentials: Any | None = None,
        lineage: Lineage | None = None,
        holder: str | None = None,
    ) -> RunContext:
        """Check ``ds`` and build the settings (with ``params``) and the lake.

        Args:
            ds: the run date.
            params: run params (DAG params or CLI flags) overriding settings.
            credentials: Google credentials of the lake and BigQuery (None: application-default).
            lineage: where the tables and datasets the run reads and writes are recorded (a new one if
                None).
            holder: who holds the night's lease for the jobs that write it (the DAG run's id); this
                process when None.

        Raises:
            pipelines.core.run_date.BadRunDate: ``ds`` is not a date.
            BadRunParameters: a param is out of range.
        """
        settings = settings_with(params)
        day = parse_run_date(ds)
        lineage = lineage if lineage is not None else Lineage()
        lake = Lake(settings.lake_url, credentials=credentials)
        if settings.dry_run_users:
            # A dry run reads the real lake and writes only to its scratch folder.
            lake = ScratchLake(lake, LakePaths.dry_run(day))
        lake.lineage = lineage
        return cls(day, settings, lake, holder or process_holder(), credentials, lineage)

    @contextlib.contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[Warehouse]:
        """The warehouse of these settings, closed when the block ends; it records this run's lineage."""
        with open_warehouse(self.settings, read_only=read_only, credentials=self.credentials) as warehouse:
            warehouse.lineage = self.lineage
            yield warehouse

    def record_fact(self, job: str, result: Any) -> None:
        """Keep a job's result as ``reports/ds=<ds>/facts/<job>.json`` for the run report."""
        self.lake.write_json(LakePaths.fact(self.ds, job), result)
