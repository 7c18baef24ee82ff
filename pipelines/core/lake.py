"""The lake: object storage behind one small interface (a local folder by default, ``gs://`` in production).

Readers must never see half a dataset, so every dataset follows write-audit-publish:

1. ``begin_publish`` picks a fresh staging folder ``<dataset>/run=<staging_id>/``;
2. writers put data files there (each object write is atomic on its own: rename locally, GCS objects
   are atomic by nature);
3. ``publish`` checks the files and then replaces ``<dataset>/_MANIFEST.json`` in one atomic step, with
   an optimistic-concurrency check (a generation precondition on GCS, a lock plus mtime check locally);
4. readers go through ``read_manifest``/``manifest_files`` only, so an unpublished or killed run is
   invisible, and a rerun replaces the whole dataset at the moment its manifest lands.

Old staging folders of the same dataset are garbage-collected after a successful publish. A dataset read
by a native loader (the item index) is published with a SHA-256 of every file in its manifest and
verified before it is loaded; a pointer or manifest that is not JSON is a :class:`CorruptArtifactError`
naming the object.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.errors import PermanentError
from pipelines.core.lineage import Lineage
from pipelines.core.paths import MANIFEST_NAME, LakePaths

log = logging.getLogger(__name__)


class PublishConflict(RuntimeError):
    """Another writer replaced the pointer between our read and our write."""


class CorruptArtifactError(PermanentError):
    """A stored object does not match its recorded checksum or cannot be parsed; the message names it."""


CHECKSUM_CHUNK = 8 << 20


class ManifestError(PermanentError):
    """A manifest is missing, malformed, or names files that are not there."""


@dataclass(frozen=True)
class PointerVersion:
    """The content of a pointer object (manifest or champion) and its generation (0 = absent)."""

    content: dict[str, Any] | None
    generation: int


class Lake:
    """Object storage rooted at ``url`` (a local path, ``file://`` or ``gs://bucket/prefix``)."""

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, credentials: Any | None = None
    ) -> None:
        """Open the lake at ``url``.

        Args:
            url: a local folder, ``file://…`` or ``gs://bucket/prefix``.
            storage_options: further fsspec options.
            credentials: Google credentials for ``gs://`` (the runtime passes those of an Airflow
                connection); None: Google's application-default credentials.
        """
        self.url = url.rstrip("/")
        self.credentials = credentials
        # Set by the run context: the datasets this run reads (by manifest) and publishes are recorded.
        self.lineage: Lineage | None = None
        self.protocol = "gs" if self.url.startswith("gs://") else "file"
        if self.protocol == "gs":
            # gcsfs probes a gRPC control API per bucket unless told not to; against emulators every
            # probe waits ~60 s. It must be set before gcsfs is imported.
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
            self.root = self.url[len("gs://") :]
        else:
            self.root = str(Path(self.url.removeprefix("file://")).resolve())
        options = dict(storage_options or {})
        if self.protocol == "gs":
            # Several workers write one dataset (a shard each) and the publisher checks their files:
            # a cached listing would hide objects written by other processes, so every listing asks GCS.
            options.setdefault("use_listings_cache", False)
            if credentials is not None:
                options.setdefault("token", credentials)
        self.storage_options = options
        self.fs = fsspec.filesystem(self.protocol, **options)
        self._gcs_bucket = None

    def __repr__(self) -> str:
        return f"Lake({self.url!r})"

    def _target(self, rel: str) -> str:
        """Where a write of ``rel`` goes (:class:`ScratchLake` writes elsewhere than it reads)."""
        return self.path(rel)

    # -- paths -------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """Filesystem path (no protocol) of ``rel``."""
        return f"{self.root}/{rel.strip('/')}" if rel else self.root

    def lineage_name(self, rel: str) -> tuple[str, str]:
        """OpenLineage namespace and name of ``rel``: ``gs://bucket`` and the object path, or ``file`` and
        the absolute path."""
        if self.protocol == "gs":
            bucket, _, path = self.path(rel).partition("/")
            return f"gs://{bucket}", path
        return "file", self.path(rel)

    def uri(self, rel: str) -> str:
        """Full URL of ``rel``, as a user would paste it."""
        return f"gs://{self.path(rel)}" if self.protocol == "gs" else self.path(rel)

    # -- plain objects -----------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self.path(rel)))

    def ls(self, rel: str) -> list[str]:
        """Names (not paths) directly under ``rel``; empty when it does not exist."""
        full = self.path(rel)
        if not self.fs.exists(full):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(full, detail=False))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object atomically (see :meth:`open_write`)."""
        with self.open_write(rel) as fh:
            fh.write(data)

    @contextlib.contextmanager
    def open_write(self, rel: str) -> Iterator[Any]:
        """A binary file that writes one object piece by piece (bounded memory whatever its size). The
        object appears whole when the block ends, and not at all when it raises: a temp file renamed into
        place locally; on GCS one upload, finalised on close and cancelled on error."""
        full = self._target(rel)
        if self.protocol != "file":
            fh = self.fs.open(full, "wb")
            try:
                yield fh
            except BaseException:
                fh.discard()  # cancels an upload in progress; a short one was never sent
                fh.closed = True
                raise
            fh.close()
            return
        Path(full).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{full}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, full)
        finally:
            tmp.unlink(missing_ok=True)

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def checksum(self, rel: str) -> str:
        """``sha256:<hex>`` of the object ``rel``, read in chunks (bounded memory whatever its size)."""
        digest = hashlib.sha256()
        with self.fs.open(self.path(rel), "rb") as fh:
            while chunk := fh.read(CHECKSUM_CHUNK):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"

    def find(self, rel: str) -> list[str]:
        """Paths of every object under ``rel``, relative to it, sorted; empty when there is none."""
        base = self.path(rel).rstrip("/")
        if not self.fs.exists(base):
            return []
        return sorted(full.rstrip("/")[len(base) :].lstrip("/") for full in self.fs.find(base))

    def verify(self, folder: str, checksums: dict[str, str]) -> None:
        """Check every object ``folder/<name>`` against its recorded checksum.

        Raises:
            CorruptArtifactError: an object is missing or its bytes differ (the message names it).
        """
        for name, expected in sorted(checksums.items()):
            rel = f"{folder}/{name}"
            if not self.exists(rel):
                raise CorruptArtifactError(f"{self.uri(rel)} is missing (recorded with checksum {expected})")
            found = self.checksum(rel)
            if found != expected:
                raise CorruptArtifactError(
                    f"{self.uri(rel)} is corrupt: its checksum is {found}, {expected} was recorded"
                )

    def write_json(self, rel: str, obj: Any) -> None:
        self.write_bytes(rel, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.write_bytes(rel, buf.getvalue())

    def read_parquet(
        self, rel: str, columns: Sequence[str] | None = None, present_only: bool = False
    ) -> pa.Table:
        """The Parquet file ``rel``, all columns or ``columns``; ``present_only`` reads those of
        ``columns`` the file has and leaves the others out (the caller checks for them) instead of
        raising."""
        with self.fs.open(self.path(rel), "rb") as fh:
            if not present_only or columns is None:
                return pq.read_table(fh, columns=None if columns is None else list(columns))
            file = pq.ParquetFile(fh)
            return file.read([c for c in columns if c in file.schema_arrow.names])

    def rm(self, rel: str) -> None:
        full = self._target(rel)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def put_dir(self, local_dir: str | Path, rel: str) -> None:
        """Upload a local folder (e.g. a saved model) under ``rel``."""
        local_dir = Path(local_dir)
        for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            self.write_bytes(f"{rel}/{file.relative_to(local_dir).as_posix()}", file.read_bytes())

    def get_dir(self, rel: str, local_dir: str | Path) -> Path:
        """Download everything under ``rel`` into ``local_dir``; return it."""
        local_dir = Path(local_dir)
        base = self.path(rel)
        found = self.fs.find(base)
        if not found:
            raise FileNotFoundError(f"nothing under {self.uri(rel)}")
        for full in found:
            target = local_dir / full[len(base) :].lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.fs.cat_file(full))
        return local_dir

    # -- pointers: small JSON objects replaced atomically with a generation check --------------------
    def read_pointer(self, rel: str) -> PointerVersion:
        if self.protocol == "gs":
            from google.api_core.exceptions import NotFound

            # One GET returns the content and, in its headers, the generation of that very content; a
            # metadata read followed by a download could pair one generation with another's bytes.
            blob = self._bucket().blob(self._blob_name(rel))
            try:
                data = blob.download_as_bytes()
            except NotFound:
                return PointerVersion(None, 0)
            return PointerVersion(self._pointer_json(rel, data), int(blob.generation))
        full = Path(self.path(rel))
        try:
            stat = full.stat()
            data = full.read_bytes()
        except FileNotFoundError:
            return PointerVersion(None, 0)
        return PointerVersion(self._pointer_json(rel, data), stat.st_mtime_ns)

    def _pointer_json(self, rel: str, data: bytes) -> dict[str, Any]:
        try:
            content = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptArtifactError(
                f"{self.uri(rel)} is not valid JSON ({exc}); restore or remove it"
            ) from exc
        if not isinstance(content, dict):
            raise CorruptArtifactError(
                f"{self.uri(rel)} must hold a JSON object, got {type(content).__name__}"
            )
        return content

    def write_pointer(self, rel: str, content: dict[str, Any], if_generation_match: int | None) -> None:
        """Replace the pointer ``rel`` with ``content`` atomically.

        Args:
            if_generation_match: the generation read before deciding to write (0 = must not exist), or
                None to overwrite unconditionally.

        Raises:
            PublishConflict: the pointer changed since it was read.
        """
        data = json.dumps(content, indent=2, sort_keys=True, default=str).encode()
        if self.protocol == "gs":
            from google.api_core.exceptions import PreconditionFailed

            blob = self._bucket().blob(self._target(rel).split("/", 1)[1])
            try:
                # Small pointer objects go up as one multipart upload, where GCS enforces the precondition.
                blob.upload_from_string(
                    data, content_type="application/json", if_generation_match=if_generation_match
                )
            except PreconditionFailed as exc:
                raise PublishConflict(f"{self.uri(rel)} changed while publishing") from exc
            return
        full = Path(self._target(rel))
        full.parent.mkdir(parents=True, exist_ok=True)
        with self._local_lock(full):
            if if_generation_match is not None:
                current = Path(self.path(rel)).stat().st_mtime_ns if self.exists(rel) else 0
                if current != if_generation_match:
                    raise PublishConflict(f"{full} changed while publishing")
            self.write_bytes(rel, data)

    @contextlib.contextmanager
    def _local_lock(self, target: Path) -> Iterator[None]:
        with open(f"{target}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _bucket(self):
        if self._gcs_bucket is None:
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                client = storage.Client(project="nightfeed-local", credentials=AnonymousCredentials())
            else:
                client = storage.Client(credentials=self.credentials)
            self._gcs_bucket = client.bucket(self.root.split("/", 1)[0])
        return self._gcs_bucket

    def _blob_name(self, rel: str) -> str:
        return self.path(rel).split("/", 1)[1]

    # -- datasets published by manifest --------------------------------------------------------------
    def begin_publish(self, dataset: str, staging_id: str | None = None) -> str:
        """Return the staging folder (relative) for a new version of ``dataset``."""
        staging_id = staging_id or new_staging_id()
        if "/" in staging_id or not staging_id:
            raise ValueError(f"staging_id must be a plain non-empty name, got {staging_id!r}")
        return f"{dataset}/run={staging_id}"

    def publish(
        self,
        dataset: str,
        staging: str,
        files: list[str],
        metadata: dict[str, Any] | None = None,
        expected_generation: int | None = None,
        checksums: bool = False,
    ) -> dict[str, Any]:
        """Make ``files`` (names inside ``staging``) the visible content of ``dataset``.

        Args:
            dataset: relative folder of the dataset, e.g. ``candidates/ds=2026-11-22``.
            staging: the folder returned by :meth:`begin_publish`, holding the files.
            files: every file name that belongs to this version; each must exist.
            metadata: extra facts stored in the manifest (row counts, model versions, ...).
            expected_generation: generation of the manifest read before the run started; None means
                "whatever is there now" (read just before writing).
            checksums: record each file's SHA-256 in the manifest (for :meth:`verified_files`).

        Returns:
            The manifest written.

        Raises:
            ManifestError: a listed file is missing.
            PublishConflict: another run published this dataset in the meantime.
        """
        if not staging.startswith(f"{dataset}/run="):
            raise ValueError(f"staging {staging!r} is not a staging folder of {dataset!r}")
        missing = [f for f in files if not self.exists(f"{staging}/{f}")]
        if missing:
            raise ManifestError(f"cannot publish {self.uri(dataset)}: missing files {missing}")
        current = self.read_pointer(f"{dataset}/{MANIFEST_NAME}")
        generation = current.generation if expected_generation is None else expected_generation
        manifest = {
            "dataset": dataset,
            "staging": staging.rsplit("/", 1)[1].removeprefix("run="),
            "files": sorted(files),
            "published_at": dt.datetime.now(dt.UTC).isoformat(),
            "metadata": metadata or {},
        }
        if checksums:
            manifest["checksums"] = {name: self.checksum(f"{staging}/{name}") for name in sorted(files)}
        self.write_pointer(f"{dataset}/{MANIFEST_NAME}", manifest, if_generation_match=generation)
        if self.lineage is not None:
            self.lineage.wrote(*self.lineage_name(dataset))
        self.collect_garbage(dataset, keep=manifest["staging"])
        log.info("published %s (%d files)", self.uri(dataset), len(files))
        return manifest

    def read_manifest(self, dataset: str) -> dict[str, Any]:
        """The published manifest of ``dataset``.

        Raises:
            ManifestError: nothing has been published there.
        """
        pointer = self.read_pointer(f"{dataset}/{MANIFEST_NAME}")
        if pointer.content is None:
            raise ManifestError(f"{self.uri(dataset)} has no published manifest")
        if self.lineage is not None:
            self.lineage.read(*self.lineage_name(dataset))
        return pointer.content

    def manifest_files(self, dataset: str) -> list[str]:
        """Relative paths of the published files of ``dataset``."""
        manifest = self.read_manifest(dataset)
        return [f"{dataset}/run={manifest['staging']}/{name}" for name in manifest["files"]]

    def verified_files(self, dataset: str) -> list[str]:
        """:meth:`manifest_files`, each checked against the checksum its manifest records.

        Raises:
            ManifestError: nothing published there, or published without checksums.
            CorruptArtifactError: a file is missing or does not match (the message names it).
        """
        manifest = self.read_manifest(dataset)
        if "checksums" not in manifest:
            raise ManifestError(f"{self.uri(dataset)} was published without checksums; publish it again")
        self.verify(f"{dataset}/run={manifest['staging']}", manifest["checksums"])
        return self.manifest_files(dataset)

    def is_published(self, dataset: str) -> bool:
        return self.read_pointer(f"{dataset}/{MANIFEST_NAME}").content is not None

    def collect_garbage(self, dataset: str, keep: str) -> None:
        """Remove the runs of ``dataset`` older than ``keep`` that no night manifest names.

        Staging ids sort by time: older folders are superseded or abandoned; newer ones may belong to a
        run still writing, so they are left alone. The run a night manifest names stays until a newer
        night manifest names another (readers of that night still read it).
        """
        pinned = self._pinned_runs(dataset)
        for name in self.ls(dataset):
            if name.startswith("run=") and name < f"run={keep}" and name.removeprefix("run=") not in pinned:
                self.rm(f"{dataset}/{name}")

    def _pinned_runs(self, dataset: str) -> set[str]:
        match = re.search(r"/ds=(\d{4}-\d{2}-\d{2})$", dataset)
        if match is None:
            return set()
        night = self.read_pointer(LakePaths.night(dt.date.fromisoformat(match[1]))).content
        return set((night or {}).get("runs", {}).values())


class ScratchLake(Lake):
    """A lake that writes under ``scratch`` (a folder of ``base``) and reads the scratch copy of an object
    first, then ``base``: a dry run sees the real models and inputs, and nothing it writes (datasets,
    manifests, facts, reports) reaches a reader of ``base``. Nothing in ``base`` is ever removed."""

    def __init__(self, base: Lake, scratch: str) -> None:
        super().__init__(base.url, base.storage_options, base.credentials)
        self.scratch = scratch.strip("/")

    def __repr__(self) -> str:
        return f"ScratchLake({self.url!r}, scratch={self.scratch!r})"

    def _target(self, rel: str) -> str:
        return super().path(f"{self.scratch}/{rel}")

    def path(self, rel: str) -> str:
        scratch = self._target(rel)
        return scratch if self.fs.exists(scratch) else super().path(rel)

    def ls(self, rel: str) -> list[str]:
        base, scratch = Lake.path(self, rel), self._target(rel)
        names = set()
        for full in (base, scratch):
            if self.fs.exists(full):
                names.update(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(full, detail=False))
        return sorted(names)

    def scratch_uri(self) -> str:
        """Where this lake's writes go, as a user would paste it."""
        full = Lake.path(self, self.scratch)
        return f"gs://{full}" if self.protocol == "gs" else full

    def clear(self) -> None:
        """Remove everything written under the scratch folder (a new dry run starts clean)."""
        full = Lake.path(self, self.scratch)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)


def new_staging_id() -> str:
    """A staging id that sorts by time and never repeats."""
    return f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
