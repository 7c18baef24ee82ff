"""Google credentials from Airflow's ``google_cloud_default`` connection, which the runtime hands to
``pipelines``.

The connection follows the Google provider's conventions for its extras (``keyfile_dict``: the service
account's JSON key; ``key_path``: a path to that key on the workers; ``scope``: comma-separated OAuth
scopes; the older ``extra__google_cloud_platform__`` prefix is read too). A connection without a key
means application-default credentials with the connection's scopes; no connection at all means the
clients' own application-default credentials (None is returned and ``pipelines`` uses them).

The provider itself (apache-airflow-providers-google) does not install next to this lock: its
``google-genai`` dependency needs an older ``tenacity`` than Airflow 3.3.2's. The key is read here with
``google-auth``, which the BigQuery and GCS clients already use.
"""

from __future__ import annotations

import json
from typing import Any

GCP_CONN_ID = "google_cloud_default"
DEFAULT_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_LEGACY_PREFIX = "extra__google_cloud_platform__"


class BadGcpConnection(ValueError):
    """The ``google_cloud_default`` connection names a key that cannot be used (the message says why)."""


def connection_credentials(conn_id: str = GCP_CONN_ID) -> Any | None:
    """Credentials of the Airflow connection ``conn_id``, or None when there is no such connection.

    Raises:
        BadGcpConnection: the connection's key is not valid JSON, not a service-account key, or missing.
    """
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    return credentials_from_extras(conn.extra_dejson, conn_id)


def credentials_from_extras(extras: dict[str, Any], conn_id: str = GCP_CONN_ID) -> Any:
    """Credentials from a Google connection's extras (see the module docstring).

    Raises:
        BadGcpConnection: the key is not valid JSON, not a service-account key, or its file is missing.
    """
    import google.auth
    from google.oauth2 import service_account

    def extra(name: str) -> Any:
        return extras.get(name) or extras.get(_LEGACY_PREFIX + name)

    scopes = [s.strip() for s in (extra("scope") or ",".join(DEFAULT_SCOPES)).split(",") if s.strip()]
    keyfile, key_path = extra("keyfile_dict"), extra("key_path")
    try:
        if keyfile:
            info = json.loads(keyfile) if isinstance(keyfile, str) else keyfile
            return service_account.Credentials.from_service_account_info(info, scopes=scopes)
        if key_path:
            return service_account.Credentials.from_service_account_file(key_path, scopes=scopes)
    except (ValueError, KeyError, OSError) as exc:
        raise BadGcpConnection(
            f"connection {conn_id}: its service-account key cannot be used: {exc}"
        ) from exc
    credentials, _ = google.auth.default(scopes=scopes)
    return credentials
