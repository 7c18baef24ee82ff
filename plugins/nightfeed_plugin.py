"""Registers Nightfeed with Airflow 3: the candidates page (a FastAPI app and a menu entry for it) and the
nightly DAG's timetable."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from nightfeed_airflow.candidates_view import URL_PREFIX, app
from nightfeed_airflow.timetables import FeaturesDays


class NightfeedPlugin(AirflowPlugin):
    name = "nightfeed"
    # The nightly DAG's schedule; the scheduler and API server read it back from the serialized DAG.
    timetables: ClassVar[list[type]] = [FeaturesDays]
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": app, "url_prefix": URL_PREFIX, "name": "Nightfeed candidates"}
    ]
    # Shown in Airflow's navigation and rendered in a frame inside the UI; href is relative to the base URL.
    external_views: ClassVar[list[dict[str, Any]]] = [
        {
            "name": "Nightfeed candidates",
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": "nightfeed-candidates",
            "destination": "nav",
            "category": "browse",
        }
    ]
