"""Stencils: quoted-printable text encoded once, whose holes filled with any values give, byte for byte, the
encoding of the text with those values."""

from __future__ import annotations

import random
import string

import pytest

from pipelines.delivery.digests.quoted_printable import quoted_printable
from pipelines.delivery.digests.stencil import fill_holes, hole, stencil

WORDS = ["a", "word", "Ünïcødé", "🚀", "=", "=3D", "x" * 90, "&amp;", " ", "\t", "tail ", "GHIJ", "zz"]


def random_text(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(1, 6)):
        parts = rng.choices(WORDS, k=rng.randint(0, 30))
        for _ in range(rng.randint(0, 3)):
            parts.insert(rng.randint(0, len(parts)), hole(rng.randint(0, 1)))
        lines.append("".join(rng.choice(["", " "]) + part for part in parts))
    return "\n".join(lines) + "\n"


def test_a_filled_stencil_is_the_encoding_of_the_filled_text() -> None:
    rng = random.Random(15)
    alphabet = "".join(sorted(set(string.printable[:94]) - {"="}))  # written as they are, not blanks
    for _ in range(500):
        text = random_text(rng)
        widths = (24, rng.randint(1, 3))
        encoded = stencil(text, widths)
        for _ in range(3):
            values = ["".join(rng.choices(alphabet, k=width)) for width in widths]
            assert encoded.fill(values) == quoted_printable(fill_holes(text, values)), (text, values)


def test_a_value_cut_by_a_soft_line_break_fills_both_holes() -> None:
    text = "x" * 70 + hole(0) + " end\n"  # the line breaks at 77 characters, inside the value
    encoded = stencil(text, (24,))
    assert len(encoded.holes) == 2
    token = "0123456789abcdef01234567"
    assert encoded.fill([token]) == quoted_printable(text.replace(hole(0), token))
    assert "=\r\n" in encoded.fill([token])


def test_a_text_holding_every_stand_in_letter_is_still_exact() -> None:
    text = string.ascii_letters + " " + hole(0) + " " + string.ascii_letters + "\n" + hole(0) * 4 + "\n"
    token = "0123456789abcdef01234567"
    assert stencil(text, (24,)).fill([token]) == quoted_printable(text.replace(hole(0), token))


def test_a_stencil_refuses_a_partial_line_and_an_unknown_slot() -> None:
    with pytest.raises(ValueError, match="whole lines"):
        stencil("no line end", (24,))
    with pytest.raises(ValueError, match="slots"):
        stencil(hole(1) + "\n", (24,))
    assert stencil("", (24,)).fill(["x" * 24]) == ""


def test_a_stencil_with_one_slot_written_in_fills_as_the_whole_stencil() -> None:
    rng = random.Random(16)
    alphabet = string.ascii_letters + string.digits
    for _ in range(300):
        text = random_text(rng)
        widths = (24, rng.randint(1, 3))
        encoded = stencil(text, widths)
        values = ["".join(rng.choices(alphabet, k=width)) for width in widths]
        number_in = encoded.with_value(1, values[1])
        assert {slot for slot, _, _ in number_in.holes} <= {0}
        assert (
            number_in.fill(values[:1]) == encoded.fill(values) == quoted_printable(fill_holes(text, values))
        )
    with pytest.raises(ValueError, match="takes values of 2 characters"):
        stencil(hole(1) + "\n", (24, 2)).with_value(1, "123")
