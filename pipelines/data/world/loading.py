"""Loading a generated world into the warehouse's raw tables, one ``ds`` partition per day."""

from __future__ import annotations

from pipelines.core.warehouse import Warehouse
from pipelines.data.world.generator import World


def load_world(warehouse: Warehouse, world: World, progress: bool = False) -> dict[str, int]:
    """Load every day of ``world`` into the raw tables (each day replaces its ``ds`` partition).

    Args:
        progress: show a progress bar (for the CLI).

    Returns:
        Rows loaded per raw table.
    """
    from tqdm import tqdm

    totals = {"raw_events": 0, "raw_items": 0, "raw_users": 0}
    days = tqdm(world.iter_days(), total=world.config.n_days, desc="world", unit="day", disable=not progress)
    for day in days:
        for table, rows in (("raw_events", day.events), ("raw_items", day.items), ("raw_users", day.users)):
            totals[table] += warehouse.load_raw(table, rows, day.ds)
    return totals
