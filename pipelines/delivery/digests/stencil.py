"""Quoted-printable text encoded once, with holes for short per-message values (a message token, a number,
a quoted user id).

Quoted-printable encodes line by line, and where it breaks a long line depends only on the line's length,
on where its "=XX" escapes fall and on a blank at its end. A value of a fixed width made of characters it
writes as they are, blanks excepted (printable ASCII but "=" and space: letters, digits, "%", "+", ...),
encodes to itself, so a text whose holes are filled with any such values encodes to the same bytes as the
text encoded once with stand-ins, the values copied over the stand-ins' places. :func:`stencil` finds those
places by encoding the text with a stand-in letter; :meth:`Stencil.fill` then costs a string join.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.delivery.digests.quoted_printable import quoted_printable

HOLE = "\x00"  # never in cleaned text (:func:`~pipelines.delivery.digests.text.clean_text` drops it)
_HOLE_RE = re.compile(f"{HOLE}([0-9]+){HOLE}")
_STAND_INS = "GHIJKLMNOPQRSTUVWXYZghijklmnopqrstuvwxyz"  # literal in quoted-printable, in no "=XX" escape


def hole(slot: int) -> str:
    """The marker of value ``slot`` in a text given to :func:`stencil`."""
    return f"{HOLE}{slot}{HOLE}"


def fill_holes(text: str, values: Sequence[str]) -> str:
    """``text`` with each :func:`hole` marker replaced by its value (the text before encoding)."""
    return _HOLE_RE.sub(lambda match: values[int(match[1])], text)


@dataclass(frozen=True)
class Stencil:
    """Whole lines of quoted-printable text with holes: ``pieces[0]``, hole 0, ``pieces[1]``, hole 1, ...

    Hole ``i`` takes ``values[slot][start:end]`` of ``holes[i] = (slot, start, end)``: a value can be cut
    by a soft line break, and then fills two holes.
    """

    pieces: tuple[str, ...]
    holes: tuple[tuple[int, int, int], ...]
    widths: tuple[int, ...]

    def fill(self, values: Sequence[str]) -> str:
        """The encoded text with ``values`` in its holes (each of the width and kind the stencil was made
        for: see :func:`stencil`)."""
        joiner, parts, places = self._layout
        if joiner is not None:  # every hole takes the whole of one value: one C call
            return values[joiner].join(self.pieces)
        parts = parts.copy()
        for place, slot, start, end in places:
            parts[place] = values[slot][start:end]
        return "".join(parts)

    def with_value(self, slot: int, value: str) -> Stencil:
        """This stencil with ``value`` written into the holes of ``slot``; the other slots keep theirs.

        Raises:
            ValueError: ``value`` is not of the slot's width.
        """
        if len(value) != self.widths[slot]:
            raise ValueError(f"slot {slot} takes values of {self.widths[slot]} characters, got {value!r}")
        pieces, holes = [self.pieces[0]], []
        for (at, start, end), piece in zip(self.holes, self.pieces[1:], strict=True):
            if at == slot:
                pieces[-1] += value[start:end] + piece
            else:
                holes.append((at, start, end))
                pieces.append(piece)
        return Stencil(tuple(pieces), tuple(holes), self.widths)

    @functools.cached_property
    def _layout(self) -> tuple[int | None, list[str], tuple[tuple[int, int, int, int], ...]]:
        """How :meth:`fill` puts values in: the slot whose value joins the pieces, when every hole takes
        the whole value of that one slot; else the pieces with an empty place for each hole, and each
        hole's place in them with its slot and cut."""
        slots = {slot for slot, _, _ in self.holes}
        if len(slots) == 1 and all(end - start == self.widths[slot] for slot, start, end in self.holes):
            return slots.pop(), [], ()
        parts, places = [self.pieces[0]], []
        for (slot, start, end), piece in zip(self.holes, self.pieces[1:], strict=True):
            places.append((len(parts), slot, start, end))
            parts += ("", piece)
        return None, parts, tuple(places)


def stencil(text: str, widths: Sequence[int]) -> Stencil:
    """The quoted-printable encoding of ``text`` (whole lines, ``\\n`` ends) with holes where its
    :func:`hole` markers are.

    Args:
        text: the text, each value written as ``hole(slot)``; a slot may occur several times.
        widths: the width of each slot's values: values of ``widths[slot]`` characters from "!" to "~",
            "=" excepted.

    Returns:
        The stencil; ``stencil(text, w).fill(v) == quoted_printable(fill_holes(text, v))`` for any such
        values ``v``.

    Raises:
        ValueError: ``text`` does not end a line, or names a slot ``widths`` has not.
        RuntimeError: the values' characters were not found in the encoded text (an encoder that breaks
            lines otherwise).
    """
    if text and not text.endswith("\n"):
        raise ValueError(f"a stencil holds whole lines, got {text[-40:]!r} at its end")
    slots = [int(slot) for slot in _HOLE_RE.findall(text)]
    if any(slot >= len(widths) for slot in slots):
        raise ValueError(f"stencil text names slots {sorted(set(slots))}, widths are given for {len(widths)}")
    if not text:
        return Stencil(("",), (), tuple(widths))
    total = sum(widths[slot] for slot in slots)
    first, spans = _encode_with_stand_ins(text, widths, total)
    found = sum(stop - start for start, stop in spans)
    if found != total:
        raise RuntimeError(f"found {found} places for the characters of stencil values {slots}")
    # The values' characters, in order, fill the spans; a soft line break cuts a value into two holes,
    # and the values of adjacent holes share a span.
    pieces, holes, end = [], [], 0
    spans.reverse()
    start = stop = 0
    for slot in slots:
        taken = 0
        while taken < widths[slot]:
            if start == stop:
                start, stop = spans.pop()
            size = min(widths[slot] - taken, stop - start)
            pieces.append(first[end:start])
            holes.append((slot, taken, taken + size))
            end = start = start + size
            taken += size
    pieces.append(first[end:])
    return Stencil(tuple(pieces), tuple(holes), tuple(widths))


def line_runs(text: str) -> list[tuple[str, bool]]:
    """``text`` (whole lines) cut into runs of lines without :func:`hole` markers and single lines with
    them, each with whether it has markers; quoted-printable encodes each run on its own.

    Raises:
        ValueError: ``text`` does not end a line.
    """
    if text and not text.endswith("\n"):
        raise ValueError(f"expected whole lines, got {text[-40:]!r} at the end")
    runs: list[tuple[str, bool]] = []
    fixed: list[str] = []
    for line in text.split("\n")[:-1]:
        if HOLE in line:
            if fixed:
                runs.append(("".join(fixed), False))
                fixed = []
            runs.append((line + "\n", True))
        else:
            fixed.append(line + "\n")
    if fixed:
        runs.append(("".join(fixed), False))
    return runs


def _encode_with_stand_ins(text: str, widths: Sequence[int], total: int) -> tuple[str, list[tuple[int, int]]]:
    """``text`` encoded with stand-ins for its values (``total`` characters in all), and the spans (start,
    stop) of the values' characters in it, in order.

    The stand-in is a letter that is not in ``text`` and that no "=XX" escape holds, so its places are
    the values'; a text holding every such letter is encoded twice, with two stand-ins, and the values'
    places are where the two differ.
    """
    mark = next((letter for letter in _STAND_INS if letter not in text), None)
    first = quoted_printable(fill_holes(text, [(mark or "a") * width for width in widths]))
    if mark is not None:
        spans, start = [], first.find(mark)
        while start >= 0:
            run = first[start : start + total]
            stop = start + len(run) - len(run.lstrip(mark))
            spans.append((start, stop))
            start = first.find(mark, stop)
        return first, spans
    second = quoted_printable(fill_holes(text, ["b" * width for width in widths]))
    if len(first) != len(second):
        raise RuntimeError("quoted-printable broke the lines of a stencil differently for two stand-ins")
    spans: list[tuple[int, int]] = []
    for place, (a, b) in enumerate(zip(first, second, strict=True)):
        if a != b:
            if spans and spans[-1][1] == place:
                spans[-1] = (spans[-1][0], place + 1)
            else:
                spans.append((place, place + 1))
    return first, spans
