"""Untrusted text in digests: controls stripped, scripts and emoji kept, excerpts cut cleanly."""

from __future__ import annotations

from pipelines.delivery.digests.text import clean_text, excerpt


def test_clean_text_strips_controls_and_keeps_scripts_and_emoji() -> None:
    # \t and \n and NEL (\x85) are whitespace -> one space; NUL, ESC, DEL, BOM and bidi overrides go.
    assert clean_text("Tab\there\x00nul\x1bESC\x7fdel\x85nel\n\nend\ufeff") == "Tab herenulESCdel nel end"
    assert clean_text("invoice\u202egpj.exe\u202c") == "invoicegpj.exe"
    assert clean_text("  שלום  עולם 👩‍💻 ") == "שלום עולם 👩‍💻"
    assert clean_text(None) == ""


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
