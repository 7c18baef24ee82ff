"""Untrusted text: every field of a post is cleaned before a digest shows it.

Control characters and bidi override/isolate controls are removed and whitespace (newlines included)
collapses to single spaces, because every post field is rendered as one line or one paragraph; long text
is cut at a word boundary. Escaping is left to the templates (the HTML one autoescapes).
"""

from __future__ import annotations

import re
import unicodedata

# Characters dropped from untrusted text: control characters that are not whitespace (whitespace ones,
# like tab, newline and NEL, become spaces), the byte order mark, and bidi embedding, override and
# isolate controls, which can reorder the text around them (spoofed titles, a digest laid out
# backwards); right-to-left letters themselves are kept and shown with dir="auto".
_DROPPED_CHARS = dict.fromkeys(
    [cp for cp in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if not chr(cp).isspace()]
    + [0xFEFF, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069]
)
_DROPPED_RE = re.compile("[" + "".join(re.escape(chr(code)) for code in _DROPPED_CHARS) + "]")


def clean_text(value: str | None) -> str:
    """One line of display text from an untrusted string.

    Removes control characters (C0, C1, DEL), bidi embedding/override/isolate controls and byte order
    marks; turns every run of whitespace (newlines and tabs included) into one space. Letters of any
    script, emoji and their joiners are kept.
    """
    if not value:
        return ""
    if _DROPPED_RE.search(value) is None:
        return " ".join(value.split())  # nothing to drop: no translation (slow on non-ASCII text)
    return " ".join(value.translate(_DROPPED_CHARS).split())


def excerpt(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters at a word boundary, with an ellipsis when cut.

    A text with no space in its first ``max_chars`` characters (one long word, or a script written
    without spaces) is cut inside the word, but never inside a letter with its marks or an emoji sequence.
    """
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space > 0 and text[len(cut)] != " ":
        cut = cut[:space]
    while cut and (_attaches_to_previous(text[len(cut)]) or cut[-1] == "\u200d"):
        cut = cut[:-1]
    return cut.rstrip(" ,;:.-–—") + "…"


def _attaches_to_previous(ch: str) -> bool:
    # Combining marks, variation selectors, the zero-width joiner and emoji skin-tone modifiers.
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or ch in "\u200d\ufe0e\ufe0f"
        or ("\U0001f3fb" <= ch <= "\U0001f3ff")
    )
