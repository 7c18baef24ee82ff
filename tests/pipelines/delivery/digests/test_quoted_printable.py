"""The quoted-printable encoder writes, byte for byte, what ``email.quoprimime.body_encode`` writes for a
body, and what ``set_content`` puts in a message, on hostile text."""

from __future__ import annotations

import random
from email import quoprimime
from email.message import EmailMessage

import pytest

from pipelines.delivery.digests.mime import MESSAGE_POLICY
from pipelines.delivery.digests.quoted_printable import cut_lines, escaped, quoted_printable

# Pieces that move soft breaks and escapes: "=" and escapes, blanks, non-ASCII of 2 to 4 UTF-8 bytes,
# line ends of every kind, characters that are line boundaries for str but not for bytes, long words.
PIECES = [
    *"aZ.=- \t",
    "==",
    "=3D",
    "é",
    "ü",
    "€",
    "日本",
    "🚀",
    "👩‍💻",
    "\r",
    "\n",
    "\r\n",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\x00",
    "\x7f",
    "word ",
    "x" * 75,
]


def reference(text: str) -> str:
    """The encoding as the standard library writes it (the bodies' encoding before the fast encoder)."""
    lines = text.encode("utf-8").splitlines()
    return quoprimime.body_encode(b"\n".join(lines).decode("latin-1") + "\n", 78, eol="\r\n")


def hostile_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.3:  # one line of exactly 74 to 81 characters, ending in an escape, a blank or a letter
        body = "".join(rng.choices("ab=é ", k=rng.randint(60, 82)))
        return (
            body[: rng.randint(74, 81)] + rng.choice(["", " ", "\t", "=", "é", "  "]) + rng.choice(["", "\n"])
        )
    pieces = rng.choices(PIECES, k=rng.randint(0, 80))
    return "".join(pieces)


def test_the_encoder_writes_the_standard_librarys_bytes_on_hostile_text() -> None:
    rng = random.Random(15)
    for _ in range(20_000):
        text = hostile_text(rng)
        assert quoted_printable(text) == reference(text), repr(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n",
        "\r\n\r\n",
        "a",
        " ",
        "\t\n",
        "." + "\n.",
        "x" * 76 + " \n",
        "x" * 77 + " \n",
        "x" * 78 + "\n",
        "x" * 79 + "\n",
        "x" * 76 + "=\n",
        "x" * 75 + "é" * 3 + "\n",
        "x" * 77 + "\t",
        "=" * 200,
        " " * 200 + "\n",
    ],
)
def test_edge_lines_are_encoded_as_the_standard_library_encodes_them(text: str) -> None:
    assert quoted_printable(text) == reference(text)


def test_a_body_encodes_as_set_content_puts_it_in_a_message() -> None:
    text = "1. Ünïcødé 🚀 = \t\n" + "long line " * 30 + "\r\nend  \n" + "x" * 77 + " \n"
    part = EmailMessage(policy=MESSAGE_POLICY)
    part.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    assert part.as_bytes().decode("ascii").split("\r\n\r\n", 1)[1] == quoted_printable(text)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        quoted_printable("a\ud800b\n")


def test_escaping_goes_byte_by_byte_so_escaped_parts_join_to_the_escaped_text() -> None:
    rng = random.Random(16)
    for _ in range(2000):
        parts = [
            "".join(rng.choices([p for p in PIECES if "\r" not in p], k=rng.randint(0, 8))) for _ in range(3)
        ]
        by_byte = "".join(
            quoprimime.quote(chr(b)) if quoprimime.body_check(b) and b != ord("\n") else chr(b)
            for b in "".join(parts).encode("utf-8")
        )
        assert "".join(map(escaped, parts)) == escaped("".join(parts)) == by_byte, parts
        assert cut_lines(escaped("".join(parts) + "\n")) == reference("".join(parts) + "\n")
    with pytest.raises(ValueError, match="carriage return"):
        escaped("a\r\n")
