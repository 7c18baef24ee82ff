"""One writer per night, and one consistent view of each night for readers.

The jobs that write a night's datasets (inputs, embeddings, index, candidates, digests, report) hold the
night's **lease**, a pointer object ``nights/ds=<ds>/_LEASE.json`` naming its holder (the Airflow DAG run,
or one command-line process) and when it expires. It is taken and renewed with a generation precondition,
so two writers racing for it cannot both win; a holder that dies loses it when it expires. A second
writer fails at once with a :class:`NightBusyError` that names the holder.

The last job of a night (the report) **closes** it: it writes the night manifest
``nights/ds=<ds>/_NIGHT.json``, naming the published run of every dataset of that night, and releases
the lease. A reader that wants one consistent night (inputs, candidates and digests of the same run)
reads the night manifest and the runs it names; a run killed half-way leaves the previous night
manifest, and the runs it names, in place (the lake never collects a run a night manifest names).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import uuid
from functools import cache
from typing import Any

from pipelines.core.errors import PermanentError
from pipelines.core.lake import Lake, PublishConflict
from pipelines.core.paths import LakePaths

log = logging.getLogger(__name__)

RENEW_ATTEMPTS = 5


class NightBusyError(PermanentError):
    """Another writer holds the night's lease; the message names it and when its lease ends."""


@cache
def process_holder() -> str:
    """The lease holder of this process when nothing else names one (a command-line run)."""
    return f"process {socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def hold(lake: Lake, ds: dt.date, holder: str, minutes: int) -> dict[str, Any]:
    """Take or renew the lease of night ``ds`` for ``holder`` (for ``minutes`` from now).

    A lease of the same holder is renewed when less than half of it is left; an expired or released
    lease of another holder is taken over. Every write carries the generation it replaces, so of two
    writers racing, one fails its precondition, reads again and finds the other's lease.

    Returns:
        The lease in force, held by ``holder``.

    Raises:
        NightBusyError: another holder's lease has not expired.
    """
    rel = LakePaths.night_lease(ds)
    for _ in range(RENEW_ATTEMPTS):
        current = lake.read_pointer(rel)
        lease = current.content
        now = _now()
        if lease is not None and lease.get("holder") != holder and _live(lease, now):
            raise NightBusyError(
                f"ds={ds} is being written by {lease['holder']} (its lease {lake.uri(rel)} runs until "
                f"{lease['expires_at']}); wait for that run to finish, or for its lease to expire if it died"
            )
        if lease is not None and lease.get("holder") == holder and _left(lease, now) > minutes * 30:
            return lease
        taken = lease["taken_at"] if lease is not None and lease.get("holder") == holder else now.isoformat()
        new = {
            "ds": ds.isoformat(),
            "holder": holder,
            "taken_at": taken,
            "expires_at": (now + dt.timedelta(minutes=minutes)).isoformat(),
        }
        try:
            lake.write_pointer(rel, new, if_generation_match=current.generation)
        except PublishConflict:
            continue  # someone wrote between our read and our write: read again and decide
        if lease is None or lease.get("holder") != holder:
            log.info("ds=%s: lease taken by %s until %s", ds, holder, new["expires_at"])
        return new
    raise NightBusyError(f"ds={ds}: the lease {lake.uri(rel)} kept changing; another writer is racing")


def close(lake: Lake, ds: dt.date, holder: str, minutes: int) -> dict[str, Any]:
    """Write the night manifest of ``ds`` (the run of each published dataset) and release the lease.

    Returns:
        The night manifest.

    Raises:
        NightBusyError: ``holder`` does not hold the lease (another run took it over).
    """
    hold(lake, ds, holder, minutes)
    datasets = {
        name: lake.read_manifest(dataset)["staging"]
        for name, dataset in LakePaths.night_datasets(ds).items()
        if lake.is_published(dataset)
    }
    manifest = {"ds": ds.isoformat(), "holder": holder, "closed_at": _now().isoformat(), "runs": datasets}
    lake.write_pointer(LakePaths.night(ds), manifest, if_generation_match=None)
    for name, staging in datasets.items():
        lake.collect_garbage(LakePaths.night_datasets(ds)[name], keep=staging)
    release(lake, ds, holder)
    log.info("ds=%s: night closed by %s: %s", ds, holder, datasets)
    return manifest


def release(lake: Lake, ds: dt.date, holder: str) -> bool:
    """End ``holder``'s lease of night ``ds`` now, if it holds it (a command that finished or failed).

    Returns:
        Whether a lease of ``holder`` was released.
    """
    rel = LakePaths.night_lease(ds)
    current = lake.read_pointer(rel)
    lease = current.content
    if lease is None or lease.get("holder") != holder or not _live(lease, _now()):
        return False
    try:
        lake.write_pointer(
            rel, {**lease, "expires_at": _now().isoformat()}, if_generation_match=current.generation
        )
    except PublishConflict:
        log.warning("ds=%s: the lease changed while %s released it; it expires on its own", ds, holder)
        return False
    return True


def read_night(lake: Lake, ds: dt.date) -> dict[str, Any] | None:
    """The night manifest of ``ds`` (None before any night of that date was closed)."""
    return lake.read_pointer(LakePaths.night(ds)).content


def _live(lease: dict[str, Any], now: dt.datetime) -> bool:
    return _left(lease, now) > 0


def _left(lease: dict[str, Any], now: dt.datetime) -> float:
    return (dt.datetime.fromisoformat(lease["expires_at"]) - now).total_seconds()
