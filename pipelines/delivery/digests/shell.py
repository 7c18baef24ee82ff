"""The body of a digest around its posts, encoded once per frequency, day and post count.

The ``digest`` templates are rendered with markers for the posts and for the per-message values (subject,
preheader, unsubscribe link). Quoted-printable encodes line by line, so the lines without a marker are
encoded once; a line whose only value is the unsubscribe link becomes a stencil with holes for the quoted
user id and the MAC; the other lines with values are escaped once around their markers, and per message
only the escaped values are put in and the line cut (escaping goes byte by byte, cutting needs the line).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipelines.delivery.digests.quoted_printable import cut_lines, escaped, quoted_printable
from pipelines.delivery.digests.stencil import HOLE, line_runs

POSTS = f"{HOLE}posts{HOLE}"
SUBJECT = f"{HOLE}subject{HOLE}"
PREHEADER = f"{HOLE}preheader{HOLE}"
UNSUBSCRIBE = f"{HOLE}unsubscribe{HOLE}"
_MARKER_RE = re.compile(f"({HOLE}[a-z]+{HOLE})")

# Kinds of chunk: encoded already; a line with only the unsubscribe link, with the holes of its quoted user
# id and MAC; a line with other values, as its escaped text around its markers (text, marker, text, ...).
_FIXED, _LINK, _VALUES = "fixed", "link", "values"


@dataclass(frozen=True)
class Shell:
    """A body around its posts: ``head`` and ``tail`` are chunks of whole lines, each with its kind."""

    head: tuple[tuple[str, str | tuple[str, ...]], ...]
    tail: tuple[tuple[str, str | tuple[str, ...]], ...]

    def encode(self, value: Callable[[str], str], posts: Sequence[str], link: Callable[[str], str]) -> str:
        """The encoded body.

        Args:
            value: the value of a marker in this message, quoted-printable escaped (:func:`escaped`).
            posts: the encoded posts, which go between ``head`` and ``tail``.
            link: the encoding of a line holding only the unsubscribe link, from that line with the holes
                of the link's quoted user id and MAC.

        Returns:
            The body, quoted-printable encoded (CRLF lines).
        """
        return "".join([*_encoded(self.head, value, link), *posts, *_encoded(self.tail, value, link)])


def shell(text: str, link: str) -> Shell:
    """The :class:`Shell` of a body rendered with the markers of the posts and the per-message values;
    ``link`` is the unsubscribe link as the body writes it, with the holes (slots 0 and 1) of its quoted
    user id and MAC.

    Raises:
        RuntimeError: the posts are not in the body once, between whole lines.
    """
    head, posts, tail = text.partition(POSTS)
    if not posts or POSTS in tail or not head.endswith("\n") or not tail.endswith("\n"):
        raise RuntimeError("a digest template must hold {{ posts }} once, at the start of a line")
    return Shell(_chunks(head, link), _chunks(tail, link))


def _chunks(text: str, link: str) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    chunks: list[tuple[str, str | tuple[str, ...]]] = []
    for chunk, has_values in line_runs(text):
        parts = _MARKER_RE.split(chunk)
        if not has_values:
            chunks.append((_FIXED, quoted_printable(chunk)))
        elif parts[1::2] == [UNSUBSCRIBE]:
            chunks.append((_LINK, chunk.replace(UNSUBSCRIBE, link)))
        else:
            chunks.append((_VALUES, tuple(part if n % 2 else escaped(part) for n, part in enumerate(parts))))
    return tuple(chunks)


def _encoded(
    chunks: Sequence[tuple[str, str | tuple[str, ...]]],
    value: Callable[[str], str],
    link: Callable[[str], str],
) -> list[str]:
    encoded = []
    for kind, chunk in chunks:
        if kind is _FIXED:
            encoded.append(chunk)
        elif kind is _LINK:
            encoded.append(link(chunk))
        else:
            encoded.append(
                cut_lines("".join([value(part) if n % 2 else part for n, part in enumerate(chunk)]))
            )
    return encoded
