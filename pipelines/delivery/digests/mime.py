"""Digest MIME from a prepared template: the bytes the ``email`` package writes, without a message object.

A digest is a multipart/alternative message of a quoted-printable UTF-8 text part and HTML part (SMTP
policy: CRLF line ends, headers folded at 78). The headers that depend only on the sender (From, List-Id,
List-Unsubscribe-Post, Auto-Submitted, MIME-Version) and the part headers are built once per sender by the
``email`` package; per message only To, Subject, Date, Message-ID, List-Unsubscribe and the boundary are
written, and the bodies come encoded as ``email.quoprimime`` (the encoder ``set_content`` uses) encodes
them, by :mod:`.quoted_printable`. A header that does not fit on one line is still folded by the ``email``
package; the Subject is folded here (:func:`fold_subject`). With a plain ASCII subject the result is, byte
for byte, the message ``EmailMessage`` builds (the tests compare them).
Quoted-printable keeps the message 7-bit, so any relay takes it; its "=XX" escapes also mean a body can
never hold the "==" that opens the boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from email import policy as email_policy
from email import quoprimime
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

# Policy of the written messages: SMTP line ends (CRLF), headers folded at 78. ``refold_source="none"``
# keeps the headers set raw (Subject, List-Unsubscribe) as written: Python would otherwise turn a long URL
# into RFC 2047 encoded-words, which mail clients do not decode in that header.
MESSAGE_POLICY = email_policy.SMTP.clone(refold_source="none")
MAX_LINE = 78
CRLF = "\r\n"
BOUNDARY_TOKEN_CHARS = 24  # a message token: hex digits of the digest's id (links.message_token)
_ENCODED_WORD_START = "=?"  # a word holding this could read as an RFC 2047 encoded-word
# The payload of an encoded word: the word fits on the Subject's first line (and within RFC 2047's 75).
_ENCODED_WORD_ROOM = MAX_LINE - len("Subject: ") - len("=?utf-8?q??=")
_PLACEHOLDER = "==nightfeed-" + "0" * BOUNDARY_TOKEN_CHARS + "=="


def boundary(token: str) -> str:
    """The MIME boundary of the digest whose message token is ``token``."""
    return f"==nightfeed-{token}=="


def _folded(name: str, value: Any) -> str:
    """The header line(s) the ``email`` package writes for ``name: value``, CRLF included."""
    return MESSAGE_POLICY.header_factory(name, value).fold(policy=MESSAGE_POLICY)


def _line(name: str, value: str, parse: Callable[[str], Any] | None = None) -> str:
    """``name: value`` on one line when it fits and is plain text, else folded by the ``email`` package
    (from ``parse(value)``, the object the message would hold, when given)."""
    if len(name) + 2 + len(value) <= MAX_LINE and value.isascii() and value.isprintable():
        return f"{name}: {value}{CRLF}"
    return _folded(name, value if parse is None else parse(value))


@functools.lru_cache(maxsize=4096)  # digests of one day share subjects: same frequency, day and top post
def fold_subject(subject: str) -> str:
    """The Subject value: plain words as they are, the rest RFC 2047-encoded, folded into lines of at most
    78 characters.

    A plain ASCII subject with single spaces and no "=?" is folded at its spaces, as the ``email`` package
    folds it. Otherwise the words up to the first that is not plain stay as they are and everything from
    it on is written as Q-encoded UTF-8 words with its spaces inside them (``_``), cut between characters
    so that each fits on the first line; the spaces between adjacent encoded words are only folding,
    which decoders drop. (The ``email`` package of Python 3.11 leaves some spaces between encoded words,
    or before a fold, and readers then lose or double them.)
    """
    words = subject.split(" ")
    plain = 0
    while plain < len(words) and _is_plain(words[plain]):
        plain += 1
    tokens = words[:plain] + _encoded_words(" ".join(words[plain:])) if plain < len(words) else words
    lines = ["Subject:"]
    for token in tokens:
        if lines[-1] == "Subject:" or len(lines[-1]) + 1 + len(token) <= MAX_LINE:
            lines[-1] += " " + token
        else:
            lines.append(" " + token)
    return CRLF.join(lines).removeprefix("Subject: ")


def _is_plain(word: str) -> bool:
    return (
        0 < len(word) < MAX_LINE - len("Subject: ")
        and word.isascii()
        and word.isprintable()
        and _ENCODED_WORD_START not in word
    )


def _encoded_words(text: str) -> list[str]:
    """``text`` as Q-encoded UTF-8 words of at most 75 characters, each holding whole characters."""
    words, chunk, size = [], [], 0
    for char in text:
        length = sum(3 if quoprimime.header_check(byte) and byte != 0x20 else 1 for byte in char.encode())
        if chunk and size + length > _ENCODED_WORD_ROOM:
            words.append(quoprimime.header_encode("".join(chunk).encode(), "utf-8"))
            chunk, size = [], 0
        chunk.append(char)
        size += length
    words.append(quoprimime.header_encode("".join(chunk).encode(), "utf-8"))
    return words


@dataclass(frozen=True)
class MimeTemplate:
    """The fixed parts of every digest of one sender, as the ``email`` package writes them.

    ``content_type`` holds the boundary of a placeholder token; the other fields are literal text.
    """

    sender: Address
    from_line: str
    list_id_line: str
    after_unsubscribe: str
    content_type: str
    text_part: str
    html_part: str

    def render(
        self,
        address: str,
        subject: str,
        date: str,
        message_id: str,
        unsubscribe: str,
        token: str,
        text_qp: str,
        html_qp: str,
    ) -> str:
        """The whole message: headers in a fixed order, then the text and HTML parts.

        Args:
            address: the recipient's plain ``local@domain`` address.
            subject: the Subject, unencoded.
            date: the Date value (RFC 5322 date-time).
            message_id: the Message-ID value, angle brackets included.
            unsubscribe: the one-click unsubscribe URL.
            token: the message token, which names the MIME boundary.
            text_qp: the plain-text body, quoted-printable encoded (:mod:`.quoted_printable`).
            html_qp: the HTML body, encoded the same way.

        Returns:
            The message, ASCII with CRLF line ends.

        Raises:
            ValueError: ``token`` is not a message token (its length sets how Content-Type folds).
        """
        if len(token) != BOUNDARY_TOKEN_CHARS:
            raise ValueError(f"message token {token!r}: expected {BOUNDARY_TOKEN_CHARS} characters")
        mark = boundary(token)
        return "".join(
            (
                self.from_line,
                _line("To", address, _address),
                f"Subject: {fold_subject(subject)}{CRLF}",
                _line("Date", date),
                _line("Message-ID", message_id),
                self.list_id_line,
                f"List-Unsubscribe: <{unsubscribe}>{CRLF}",
                self.after_unsubscribe,
                self.content_type.replace(_PLACEHOLDER, mark),
                f"{CRLF}--{mark}{CRLF}",
                self.text_part,
                text_qp,
                f"{CRLF}--{mark}{CRLF}",
                self.html_part,
                html_qp,
                f"{CRLF}--{mark}--{CRLF}",
            )
        )


def _address(addr_spec: str) -> Address:
    return Address(addr_spec=addr_spec)


def mime_template(sender: Address) -> MimeTemplate:
    """The fixed parts of the digests sent by ``sender``, taken from a message the ``email`` package builds.

    Raises:
        RuntimeError: that message is not laid out as the template expects (a Python whose ``email``
            package writes differently).
    """
    mark = _PLACEHOLDER
    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("T", subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative("H", subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]
    msg.set_boundary(mark)
    raw = msg.as_bytes().decode("ascii")
    head, text_part, html_part, end = raw.split(f"--{mark}")
    after_unsubscribe, content_type = head.split("Content-Type:", 1)
    if not (text_part.endswith(f"{CRLF}T{CRLF}{CRLF}") and html_part.endswith(f"{CRLF}H{CRLF}{CRLF}")):
        raise RuntimeError(f"the email package wrote an unexpected digest skeleton: {raw!r}")
    if end != f"--{CRLF}" or not content_type.endswith(CRLF * 2):
        raise RuntimeError(f"the email package wrote an unexpected digest skeleton: {raw!r}")
    return MimeTemplate(
        sender=sender,
        from_line=_folded("From", sender),
        list_id_line=_folded("List-Id", f"Nightfeed digest <digest.{sender.domain}>"),
        after_unsubscribe=after_unsubscribe,
        content_type="Content-Type:" + content_type[: -len(CRLF)],
        text_part=text_part.removeprefix(CRLF).removesuffix(f"T{CRLF}{CRLF}"),
        html_part=html_part.removeprefix(CRLF).removesuffix(f"H{CRLF}{CRLF}"),
    )
