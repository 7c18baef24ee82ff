"""Quoted-printable bodies: the bytes ``email.quoprimime.body_encode`` writes, at a fraction of its cost.

A digest body is UTF-8 text encoded as ``set_content(text, charset="utf-8", cte="quoted-printable")``
encodes it (SMTP policy: lines of at most 78 characters, CRLF ends). ``body_encode`` escapes each byte
through a table and then walks every line in Python. Here the bytes are escaped by ``binascii.b2a_qp``,
which escapes the same bytes plus a few it need not (a lone "." on a line, a blank at a line end) and
breaks lines at 76; those escapes and its soft breaks are undone. Only a line longer than 78 characters or
ending in a blank is then cut or has its blank quoted, by ``body_encode``'s rules, in its places.
"""

from __future__ import annotations

import binascii
from email import quoprimime

from pipelines.delivery.digests.mime import CRLF, MAX_LINE

# What b2a_qp writes that body_encode does not: its soft breaks ("=" never stands alone otherwise, so
# these are exact) and the escapes of characters body_encode leaves as they are.
_UNDONE = ((b"=\n", b""), (b"=2E", b"."), (b"=20", b" "), (b"=09", b"\t"))


def quoted_printable(text: str) -> str:
    """``text`` as ``set_content(text, charset="utf-8", cte="quoted-printable")`` encodes it: CRLF lines of at
    most 78 characters, any line end (``\\n``, ``\\r\\n``, ``\\r``) written as CRLF, a CRLF at the end.

    Raises:
        UnicodeEncodeError: ``text`` holds a lone surrogate (no UTF-8 for it).
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    return cut_lines(escaped(text))


def escaped(text: str) -> str:
    """The UTF-8 bytes of ``text`` as quoted-printable escapes them, each line end (``\\n``) kept and no line
    cut yet. Bytes are escaped one by one, so the escaped parts of a text put together are the escaped text.

    Raises:
        ValueError: ``text`` holds a carriage return (a line end of its own: see :func:`quoted_printable`).
        UnicodeEncodeError: ``text`` holds a lone surrogate.
    """
    if "\r" in text:
        raise ValueError(f"escaped() takes lines ended by \\n only, got a carriage return in {text[:40]!r}")
    out = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    for written, meant in _UNDONE:
        out = out.replace(written, meant)
    return out.decode("ascii")


def cut_lines(escaped_lines: str) -> str:
    """Whole lines of :func:`escaped` text as quoted-printable writes them: CRLF ends, a line longer than 78
    characters cut by soft breaks, a blank at a line's end quoted."""
    lines = escaped_lines.split("\n")  # the last one empty: the end of the last line
    if max(map(len, lines)) <= MAX_LINE and " \n" not in escaped_lines and "\t\n" not in escaped_lines:
        return escaped_lines.replace("\n", CRLF)
    return CRLF.join(
        [_wrapped(line) if len(line) > MAX_LINE or line.endswith((" ", "\t")) else line for line in lines]
    )


def _wrapped(line: str) -> str:
    """One escaped line as ``body_encode`` writes it: cut into soft-broken pieces of at most 78 characters
    (never inside an "=XX" escape), a space or tab at its end escaped or moved past a soft break."""
    pieces = []
    start, last_start = 0, len(line) - 1 - MAX_LINE
    while start <= last_start:
        stop = start + MAX_LINE - 1
        if line[stop - 2] == "=":  # the escape's "=" ends this piece as the soft break, then opens the next
            pieces.append(line[start : stop - 1])
            start = stop - 2
        elif line[stop - 1] == "=":
            pieces.append(line[start:stop])
            start = stop - 1
        else:
            pieces.append(line[start:stop] + "=")
            start = stop
    if line.endswith((" ", "\t")):
        room, blank = start - last_start, line[-1]
        if room >= 3:
            tail = quoprimime.quote(blank)
        elif room == 2:
            tail = blank + "=" + CRLF
        else:
            tail = "=" + CRLF + quoprimime.quote(blank)
        pieces.append(line[start:-1] + tail)
    else:
        pieces.append(line[start:])
    return CRLF.join(pieces)
