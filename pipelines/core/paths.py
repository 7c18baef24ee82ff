"""The lake layout: the relative path of every dataset, model and pointer Nightfeed writes.

Every path is relative to the lake root (``Settings.lake_url``); ``ds`` partitions are ``<name>/ds=<ds>``.
"""

from __future__ import annotations

import datetime as dt

TWO_TOWER = "two_tower"
RANKER = "ranker"
ALS = "als"
# The champion of kind ``system`` names the served system (retriever, models, list stages).
SYSTEM = "system"
MANIFEST_NAME = "_MANIFEST.json"
NIGHT_MANIFEST_NAME = "_NIGHT.json"
LEASE_NAME = "_LEASE.json"
CHAMPION_NAME = "champion.json"
FACTS_DIR = "facts"


class LakePaths:
    """Relative lake paths of every dataset, per run date ``ds`` where it has one."""

    @staticmethod
    def model_dir(kind: str, version: str) -> str:
        return f"models/{kind}/{version}"

    @staticmethod
    def champion(kind: str) -> str:
        return f"models/{kind}/{CHAMPION_NAME}"

    @staticmethod
    def dataset(name: str, ds: dt.date) -> str:
        """Folder of a ds-partitioned dataset: ``inputs``, ``embeddings``, ``index``, ``candidates``,
        ``digests``, ``reports`` or ``quarantine``."""
        return f"{name}/ds={ds.isoformat()}"

    @staticmethod
    def inputs(ds: dt.date) -> str:
        return LakePaths.dataset("inputs", ds)

    @staticmethod
    def embeddings(ds: dt.date) -> str:
        return LakePaths.dataset("embeddings/items", ds)

    @staticmethod
    def index(ds: dt.date) -> str:
        return LakePaths.dataset("index", ds)

    @staticmethod
    def candidates(ds: dt.date) -> str:
        return LakePaths.dataset("candidates", ds)

    @staticmethod
    def digests(ds: dt.date) -> str:
        return LakePaths.dataset("digests", ds)

    @staticmethod
    def reports(ds: dt.date) -> str:
        return LakePaths.dataset("reports", ds)

    @staticmethod
    def quarantine(ds: dt.date) -> str:
        return LakePaths.dataset("quarantine", ds)

    @staticmethod
    def facts(ds: dt.date) -> str:
        """Folder of the facts the jobs of ``ds`` recorded for the run report (beside its staging)."""
        return f"{LakePaths.reports(ds)}/{FACTS_DIR}"

    @staticmethod
    def fact(ds: dt.date, job: str) -> str:
        return f"{LakePaths.facts(ds)}/{job}.json"

    @staticmethod
    def night(ds: dt.date) -> str:
        """The night manifest of ``ds``: the run of each dataset of the last complete night."""
        return f"{LakePaths.dataset('nights', ds)}/{NIGHT_MANIFEST_NAME}"

    @staticmethod
    def night_lease(ds: dt.date) -> str:
        """The lease of night ``ds``: who writes its datasets now, and until when."""
        return f"{LakePaths.dataset('nights', ds)}/{LEASE_NAME}"

    @staticmethod
    def night_datasets(ds: dt.date) -> dict[str, str]:
        """The datasets one night publishes, by name, in the order the night writes them."""
        return {
            "inputs": LakePaths.inputs(ds),
            "embeddings": LakePaths.embeddings(ds),
            "index": LakePaths.index(ds),
            "candidates": LakePaths.candidates(ds),
            "digests": LakePaths.digests(ds),
            "report": LakePaths.reports(ds),
        }

    @staticmethod
    def dry_run(ds: dt.date) -> str:
        """Scratch folder of a dry run of ``ds``: everything it writes, never read by anyone else."""
        return f"dry-runs/ds={ds.isoformat()}"

    @staticmethod
    def shard_file(shard: int, suffix: str = "parquet") -> str:
        return f"shard={shard:03d}.{suffix}"
