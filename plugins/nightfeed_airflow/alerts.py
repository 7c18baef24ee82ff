"""Failure alerts: an Airflow notifier on every failed task and DAG run, by e-mail and optionally Slack.

Who is alerted comes from Nightfeed's settings (``alerts.email_to``, ``alerts.slack_conn_id``), read when a
failure happens, never at parse time; how to reach the SMTP server (host, port, login, TLS) comes from the
Airflow connection ``alerts.smtp_conn_id`` (``smtp_default``), used through the SMTP provider's
``SmtpNotifier``. Slack goes through the Slack provider's ``SlackNotifier`` when that provider is
installed. Task callbacks run where the task ran (a worker); DAG-run callbacks in the dag-processor.
"""

from __future__ import annotations

import html
import logging
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)


class FailureAlert(BaseNotifier):
    """Tell the configured people that a task or a DAG run failed, with what failed, where and why."""

    template_fields = ()

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render: the text is built from the context when the alert is sent (and ``dags test``
        hands DAG-run callbacks a serialized DAG, which has no template environment)."""

    def notify(self, context: Any) -> None:
        """Send the alert of ``context`` (a task's or a DAG run's failure context)."""
        from pipelines.core.settings import load_settings

        alerts = load_settings().alerts
        if not alerts.email_to and not alerts.slack_conn_id:
            log.warning("no alert sent: set alerts.email_to or alerts.slack_conn_id to be told of failures")
            return
        subject, lines = describe_failure(context)
        if alerts.email_to:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
            SmtpNotifier(
                to=alerts.email_to,
                from_email=alerts.email_from,
                smtp_conn_id=alerts.smtp_conn_id,
                subject=subject,
                html_content=body,
            ).notify(context)
        if alerts.slack_conn_id:
            try:
                from airflow.providers.slack.notifications.slack import SlackNotifier
            except ImportError:
                log.error("alerts.slack_conn_id is set but apache-airflow-providers-slack is not installed")
                return
            text = "\n".join([f"*{subject}*", *lines])
            SlackNotifier(slack_conn_id=alerts.slack_conn_id, channel=alerts.slack_channel, text=text).notify(
                context
            )


def describe_failure(context: Any) -> tuple[str, list[str]]:
    """The subject and body lines of a failure alert: DAG, run, day, task and try, and the error."""
    dag_run = context.get("dag_run")
    ti = context.get("ti")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", "?")
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", "?")
    params = context.get("params") or {}
    day = params.get("run_date") or (context.get("logical_date") or getattr(dag_run, "logical_date", None))
    lines = [f"DAG: {dag_id}", f"Run: {run_id}", f"Day: {day if day else 'not set'}"]
    if ti is not None and context.get("reason") is None:
        task = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        subject = f"[nightfeed] {dag_id}: task {task} failed"
        lines += [f"Task: {task}, try {ti.try_number}", f"Host: {getattr(ti, 'hostname', None) or '?'}"]
    else:
        subject = f"[nightfeed] {dag_id}: run {run_id} failed"
    error = context.get("exception") or context.get("reason")
    if error:
        lines.append(f"Error: {error}")
    return subject, lines
