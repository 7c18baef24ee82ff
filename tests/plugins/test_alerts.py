"""Failure alerts for real: DAG runs through ``airflow dags test`` whose failures are mailed through the
SMTP provider to a local SMTP server (aiosmtpd), the server named by an Airflow connection and the
recipients by Nightfeed's settings.

Two failures, no world needed: the features of a day without raw events (a permanent failure), and the
freshness check on a lake where nothing was ever published.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.airflow_support import airflow_env, dags_test, free_port, prepare_home

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

DS = "2026-11-20"
OPS = "ops@nightfeed.example"


class Inbox:
    """An aiosmtpd handler that keeps every message it receives, and the port it listens on."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"

    def take(self) -> list[tuple[str, str, str]]:
        """(to, subject, body text) of the messages received so far, and forget them."""
        out = []
        for message in self.messages:
            body = message.get_body(("html", "plain"))
            out.append((message["To"], message["Subject"], body.get_content() if body else ""))
        self.messages.clear()
        return out


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    handler = Inbox(free_port())
    controller = Controller(handler, hostname="127.0.0.1", port=handler.port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def env(inbox: Inbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    smtp = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": inbox.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 10, "retry_limit": 1},
    }
    return airflow_env(
        prepare_home(tmp_path_factory.mktemp("alerts_home")),
        tmp_path_factory.mktemp("alerts_data"),
        AIRFLOW_CONN_SMTP_DEFAULT=json.dumps(smtp),
        NIGHTFEED_ALERTS__EMAIL_TO=json.dumps([OPS]),
    )


def test_a_failed_task_and_its_failed_run_are_both_mailed(env: dict[str, str], inbox: Inbox) -> None:
    # No raw events for the day: the features job fails permanently, so its run fails too.
    proc = dags_test(env, "nightfeed_features", DS)
    assert "build_features" in proc.stdout + proc.stderr
    mails = inbox.take()
    by_subject = {subject: body for _, subject, body in mails}
    assert len(mails) == 2, (mails, proc.stdout[-3000:])
    assert {to for to, _, _ in mails} == {OPS}
    task_mail = by_subject["[nightfeed] nightfeed_features: task build_features failed"]
    assert "Day: 2026-11-20" in task_mail and "Task: build_features, try 1" in task_mail
    assert "cannot succeed on retry" in task_mail and "no raw events" in task_mail, task_mail
    run_subject = next(
        s for s in by_subject if s != "[nightfeed] nightfeed_features: task build_features failed"
    )
    assert run_subject.startswith("[nightfeed] nightfeed_features: run manual__") and run_subject.endswith(
        " failed"
    )
    assert "Day: 2026-11-20" in by_subject[run_subject] and "Error: task_failure" in by_subject[run_subject]


def test_stale_outputs_fail_the_freshness_check_loudly(env: dict[str, str], inbox: Inbox) -> None:
    proc = dags_test(env, "nightfeed_freshness", DS)
    assert proc.returncode != 0 or "failed" in proc.stdout
    mails = inbox.take()
    task_mail = next(body for _, subject, body in mails if "task check_freshness failed" in subject)
    assert "no candidates are published in" in task_mail and "no digests are published in" in task_mail
