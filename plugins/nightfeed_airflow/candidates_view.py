"""The "Nightfeed candidates" page inside the Airflow UI: one user's latest published candidates.

An operator enters a user id and sees that user's list from the newest published ``candidates/ds=…``
(rank, item, title, score, reason, retrieval score) and a preview of the digest e-mail built from it.

Reads only published data, through the lake manifests: the candidates shard that holds the user (users go
to shard ``crc32(user_id) % num_shards``), and the ``items`` and ``profiles`` tables of the run's inputs
snapshot for titles and the digest preview. Writes nothing.

Airflow 3 mounts plugin FastAPI apps without authentication, so every route here depends on
:func:`require_reader`: Airflow's own JWT (the UI's ``_token`` cookie or an ``Authorization: Bearer``
header from ``POST /auth/token``) must name a user whom the auth manager lets read the nightly DAG's runs.
Heavy imports happen inside the handlers; this module is imported when Airflow loads its plugins.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nightfeed_airflow.dag_support import NIGHTLY_DAG_ID

log = logging.getLogger(__name__)

URL_PREFIX = "/nightfeed"
MAX_ID_LENGTH = 200
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)

_bearer = HTTPBearer(auto_error=False)


async def airflow_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Any:
    """The Airflow user of this request, resolved exactly as Airflow's own REST API does.

    Raises:
        HTTPException: 401 without a token, 401/403 with an expired or invalid one.
    """
    from airflow.api_fastapi.core_api.security import get_user

    return await get_user(request, None, credentials)


def require_reader(user: Annotated[Any, Depends(airflow_user)]) -> Any:
    """Allow users who may read the nightly DAG's runs (the candidates are that DAG's output).

    Raises:
        HTTPException: 403 for an authenticated user without that permission, or whose token names a role
            the auth manager does not know (it raises instead of answering no).
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    try:
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=NIGHTLY_DAG_ID), user=user
        )
    except (KeyError, ValueError) as exc:
        log.warning(
            "refused user %r: the auth manager cannot check the token's role: %r", user.get_name(), exc
        )
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"user {user.get_name()!r} has a role that is not known"
        ) from exc
    if not allowed:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"user {user.get_name()!r} may not read runs of {NIGHTLY_DAG_ID}"
        )
    return user


@dataclass(frozen=True)
class CandidateRow:
    rank: int
    item_id: str
    title: str
    score: float
    reason: str
    retrieval_score: float


@dataclass(frozen=True)
class UserCandidates:
    ds: str
    user_id: str
    rows: list[CandidateRow]
    dataset_uri: str


def _lake() -> Any:
    from pipelines.core.lake import Lake
    from pipelines.core.settings import load_settings

    return Lake(load_settings().lake_url)


def user_candidates(lake: Any, ds: dt.date, user_id: str) -> UserCandidates:
    """``user_id``'s published candidates of ``ds``, best first, with item titles.

    Raises:
        pipelines.core.lake.ManifestError: the candidates of ``ds`` are not published.
    """
    import pyarrow.compute as pc

    from pipelines.core.paths import LakePaths
    from pipelines.core.schema import CANDIDATES
    from pipelines.serving.inputs import read_input
    from pipelines.serving.sharding import shard_of

    dataset = LakePaths.candidates(ds)
    manifest = lake.read_manifest(dataset)
    files = lake.manifest_files(dataset)
    num_shards = (manifest.get("metadata") or {}).get("num_shards")
    if num_shards:
        own = "/" + LakePaths.shard_file(int(shard_of([user_id], int(num_shards))[0]))
        files = [path for path in files if path.endswith(own)] or files
    rows: list[dict[str, Any]] = []
    for path in files:
        table = lake.read_parquet(path, columns=list(CANDIDATES.names))
        rows.extend(table.filter(pc.equal(table.column("user_id"), user_id)).to_pylist())
    rows.sort(key=lambda row: row["rank"])
    titles = _titles(lake, ds, {row["item_id"] for row in rows}, read_input) if rows else {}
    return UserCandidates(
        ds=ds.isoformat(),
        user_id=user_id,
        rows=[
            CandidateRow(
                rank=int(row["rank"]),
                item_id=row["item_id"],
                title=titles.get(row["item_id"], ""),
                score=float(row["score"]),
                reason=row["reason"] or "",
                retrieval_score=float(row["retrieval_score"]),
            )
            for row in rows
        ],
        dataset_uri=lake.uri(dataset),
    )


def _titles(lake: Any, ds: dt.date, item_ids: set[str], read_input: Any) -> dict[str, str]:
    try:
        items = read_input(lake, ds, "items").select(["item_id", "title"])
    except (FileNotFoundError, KeyError, RuntimeError) as exc:
        log.warning("no item titles for ds=%s: %s", ds, exc)
        return {}
    return {row["item_id"]: row["title"] for row in items.to_pylist() if row["item_id"] in item_ids}


def digest_preview_html(lake: Any, ds: dt.date, user_id: str) -> str:
    """The HTML body of ``user_id``'s digest built from the published candidates of ``ds``.

    Raises:
        ValueError: the user is unknown or has no fresh candidates.
    """
    from pipelines.core.settings import load_settings
    from pipelines.delivery.digests.preview import preview_digest
    from pipelines.serving.inputs import read_input

    with tempfile.TemporaryDirectory(prefix="nightfeed-digest-") as tmp:
        out = preview_digest(
            lake,
            ds,
            user_id,
            read_input(lake, ds, "profiles"),
            read_input(lake, ds, "items"),
            load_settings().digest,
            Path(tmp) / "digest.html",
        )
        return out.read_text(encoding="utf-8")


UserIdQuery = Annotated[str | None, Query(max_length=MAX_ID_LENGTH, description="user id, e.g. u0000042")]
DsQuery = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="run date; default newest")]


def _resolve_ds(lake: Any, ds: str | None) -> dt.date | None:
    """The requested run date, or the newest published one.

    Raises:
        HTTPException: 400 when ``ds`` has the date pattern but is no calendar date (``9999-99-99``).
    """
    from pipelines.core.run_date import BadRunDate, parse_run_date

    if not ds:
        from pipelines.delivery.freshness import newest_published_ds

        return newest_published_ds(lake, "candidates")
    try:
        return parse_run_date(ds, "ds")
    except BadRunDate as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


app = FastAPI(
    title="Nightfeed candidates",
    dependencies=[Depends(require_reader)],
    # The generated docs routes would bypass the app-level dependency, so there are none.
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


@app.get("/", response_class=HTMLResponse)
def candidates_page(request: Request, user_id: UserIdQuery = None, ds: DsQuery = None) -> HTMLResponse:
    """The page: a user-id form and, once a user is given, their candidates and digest preview."""
    from pipelines.core.lake import ManifestError

    user_id = (user_id or "").strip() or None
    lake = _lake()
    run_ds = _resolve_ds(lake, ds)
    result, error = None, None
    if user_id and run_ds:
        try:
            result = user_candidates(lake, run_ds, user_id)
        except ManifestError as exc:
            error = str(exc)
    html = TEMPLATES.get_template("candidates.html.j2").render(
        base=request.scope.get("root_path", "").rstrip("/"),
        user_id=user_id or "",
        ds=run_ds,
        requested_ds=ds,
        result=result,
        error=error,
        lake_uri=lake.uri(""),
    )
    return HTMLResponse(html)


@app.get("/api/candidates")
def candidates_json(
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)], ds: DsQuery = None
) -> JSONResponse:
    """The same list as JSON: ``{"ds", "user_id", "dataset", "candidates": [...]}``."""
    from pipelines.core.lake import ManifestError

    lake = _lake()
    run_ds = _resolve_ds(lake, ds)
    if run_ds is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no candidates are published in {lake.uri('')}")
    try:
        result = user_candidates(lake, run_ds, user_id)
    except ManifestError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return JSONResponse(
        {
            "ds": result.ds,
            "user_id": result.user_id,
            "dataset": result.dataset_uri,
            "candidates": [row.__dict__ for row in result.rows],
        }
    )


@app.get("/digest", response_class=HTMLResponse)
def digest_preview(
    user_id: Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)], ds: DsQuery = None
) -> HTMLResponse:
    """The user's digest e-mail body, rendered from the published candidates; shown in a sandboxed frame."""
    from pipelines.core.lake import ManifestError

    lake = _lake()
    run_ds = _resolve_ds(lake, ds)
    if run_ds is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no candidates are published in {lake.uri('')}")
    try:
        html = digest_preview_html(lake, run_ds, user_id)
    except (ValueError, ManifestError, FileNotFoundError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no digest preview for {user_id!r}: {exc}") from exc
    # The e-mail is shown as-is; the sandbox keeps anything in it from running in Airflow's origin.
    return HTMLResponse(html, headers={"Content-Security-Policy": "sandbox"})
