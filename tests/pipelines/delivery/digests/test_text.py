"""Untrusted text in digests: controls stripped, scripts and emoji kept, excerpts cut cleanly."""

from __future__ import annotations

import random

from pipelines.delivery.digests.text import clean_text, excerpt

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_clean_text_strips_controls_and_keeps_scripts_and_emoji() -> None:
    # \t and \n and NEL (\x85) are whitespace -> one space; NUL, ESC, DEL, BOM and bidi overrides go.
    assert clean_text("Tab\there\x00nul\x1bESC\x7fdel\x85nel\n\nend\ufeff") == "Tab herenulESCdel nel end"
    assert clean_text("invoice\u202egpj.exe\u202c") == "invoicegpj.exe"
    assert clean_text("  שלום  עולם 👩‍💻 ") == "שלום עולם 👩‍💻"
    assert clean_text(None) == ""


def test_clean_text_drops_exactly_the_controls_with_or_without_any_in_the_text() -> None:
    rng = random.Random(15)
    pieces = ["word", "Ünïcødé", "🚀", " ", "  ", "\t", "\n", "\x85", "\u2028", "\x00", "\x1b", "\x7f"]
    pieces += ["\x9f", "\ufeff", *BIDI_CONTROLS]
    for _ in range(3000):
        value = "".join(rng.choices(pieces, k=rng.randint(0, 12)))
        kept = "".join(
            " " if ch.isspace() else ch
            for ch in value
            if ch.isspace()
            or not (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch == "\ufeff" or ch in BIDI_CONTROLS)
        )
        assert clean_text(value) == " ".join(kept.split()), repr(value)


def test_excerpt_cuts_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"  # 22 characters
    assert excerpt(text, 22) == text
    # Room for 13 characters plus "…": "alpha beta ga" -> back to the last space -> "alpha beta…".
    assert excerpt(text, 14) == "alpha beta…"
    # The cut falls just before a space: "alpha beta" is whole, kept as is.
    assert excerpt(text, 11) == "alpha beta…"
    # No space at all: cut inside a word, never between a letter and its accent (e + U+0301) nor
    # inside an emoji joined with U+200D: room for 6 keeps "abcdé", room for 5 would split é -> "abcd".
    assert excerpt("abcde\u0301fghij", 7) == "abcde\u0301…"
    assert excerpt("abcde\u0301fghij", 6) == "abcd…"
    assert excerpt("xy👩\u200d💻z", 4) == "xy…"  # "xy👩" would split the ZWJ sequence
