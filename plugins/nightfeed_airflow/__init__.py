"""Adapters between Airflow and the ``pipelines`` library: run arguments for tasks, and the UI view.

This package is on ``sys.path`` because Airflow adds its plugins folder there; the DAG files import
:mod:`nightfeed_airflow.runtime` at parse time, so nothing here imports heavy libraries at module level.
"""
