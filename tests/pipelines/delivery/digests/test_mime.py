"""The prepared MIME template writes, byte for byte, the message the ``email`` package builds; subjects
fold as the package folds them and parse back to themselves."""

from __future__ import annotations

import datetime as dt
import random
import string
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import pytest

from pipelines.delivery.digests.links import message_token
from pipelines.delivery.digests.mime import MESSAGE_POLICY, fold_subject, mime_template
from pipelines.delivery.digests.quoted_printable import quoted_printable
from tests.pipelines.delivery.digests.digest_world import parse

SENDERS = [
    Address("Nightfeed", addr_spec="digest@nightfeed.example"),
    Address("Nïghtfeed “digests”, daily", addr_spec="digest@a-very-long-subdomain.of-a-long-domain.example"),
]
TEXT = 'Nightfeed - your digest\n\n1. Ünïcødé 🚀 title = a "quote" \t\n' + "long line " * 30 + "\nend  \n"
HTML = "<p>=3D &amp; <b>bold</b> " + "x" * 200 + "</p>\r\n<p>שלום</p> \n"
SUBJECTS = [
    "Your daily Nightfeed digest, Sun 8 Mar: First post",
    "Your weekly Nightfeed digest, Mon 9 Mar: " + "a much longer headline about compilers " * 2,
    "Ünïcødé 🚀 שלום עולם and مرحبا in one very long headline about compilers and more…",
    'Tricky =? ?= (comment) "quoted" <angle> a,b;c:d',
    "One " + "x" * 90 + " word",
]


def email_package_message(
    sender: Address, address: str, subject: str, date: str, message_id: str, link: str, token: str
) -> str:
    """The digest as ``EmailMessage`` builds it (the way digests were written before the template), with
    the Subject folded by :func:`fold_subject`."""
    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["From"] = sender
    msg["To"] = Address(addr_spec=address)
    msg.set_raw("Subject", fold_subject(subject))
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["List-Id"] = f"Nightfeed digest <digest.{sender.domain}>"
    msg.set_raw("List-Unsubscribe", f"<{link}>")
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(TEXT, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(HTML, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    msg.set_boundary(f"==nightfeed-{token}==")
    return msg.as_bytes().decode("ascii")


def _refold(folded: str) -> str:
    lines = [""]
    for word in folded.rstrip("\r\n").replace("\r\n", "").split(" "):
        if not lines[-1]:
            lines[-1] = word
        elif len(lines[-1]) + 1 + len(word) <= 78:
            lines[-1] += " " + word
        else:
            lines.append(" " + word)
    return "\r\n".join(lines).removeprefix("Subject: ")


@pytest.mark.parametrize("sender", SENDERS, ids=["short", "long-international"])
@pytest.mark.parametrize("subject", SUBJECTS, ids=["plain", "long", "international", "tricky", "long-word"])
@pytest.mark.parametrize("address", ["u01@example.com", "a.b+{x}~'q@" + "sub." * 17 + "example.com"])
def test_template_writes_the_email_packages_bytes(sender: Address, subject: str, address: str) -> None:
    token = message_token(dt.date(2026, 3, 7), address)
    date = format_datetime(dt.datetime(2026, 3, 8, 7, tzinfo=dt.UTC))
    message_id = f"<digest.2026-03-07.{token}@{sender.domain}>"
    link = f"https://nightfeed.example/unsubscribe?u=u01&t=k1.{'f' * 60}"
    bodies = quoted_printable(TEXT), quoted_printable(HTML)
    raw = mime_template(sender).render(address, subject, date, message_id, link, token, *bodies)
    assert raw == email_package_message(sender, address, subject, date, message_id, link, token)
    msg = parse(raw)
    assert msg["Subject"] == subject and msg["To"] == address and msg["From"] == str(sender)
    text, html = (msg.get_body((kind,)).get_content() for kind in ("plain", "html"))
    assert text.replace("\r\n", "\n") == TEXT
    assert html.replace("\r\n", "\n") == HTML.replace("\r\n", "\n")


def test_plain_subjects_fold_as_the_email_package_folds_them() -> None:
    rng = random.Random(15)
    alphabet = string.ascii_letters + string.digits + string.punctuation
    for _ in range(1000):
        words = ["".join(rng.choices(alphabet, k=rng.randint(1, 14))) for _ in range(rng.randint(1, 20))]
        subject = " ".join(words).replace("=?", "=")
        folded = MESSAGE_POLICY.header_factory("Subject", subject).fold(policy=MESSAGE_POLICY)
        assert fold_subject(subject) == _refold(folded), subject


def test_any_subject_parses_back_to_itself_in_short_lines() -> None:
    rng = random.Random(15)
    words = [*"aBz09", "digest,", "Ünïcødé", "🚀", "👩‍💻", "שלום", "مرحبا", "日本語の記事", "=?x?q?y?=", ""]
    words.append("x" * 90)
    for _ in range(1000):
        subject = " ".join(rng.choices(words, k=rng.randint(1, 25))) + rng.choice(["", "…", " "])
        folded = fold_subject(subject)
        assert all(len(line) <= 78 for line in f"Subject: {folded}".split("\r\n")), folded
        assert parse(f"Subject: {folded}\r\n\r\n")["Subject"] == subject, folded


def test_a_token_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError, match="expected 24 characters"):
        mime_template(SENDERS[0]).render("u@example.com", "S", "D", "<m@x>", "https://x", "abc", "t", "h")
