"""Digest preview: one user's HTML body, also for users who are not due."""

from __future__ import annotations

import pytest

from pipelines.delivery.digests.preview import preview_digest
from tests.pipelines.delivery.digests.digest_world import CONFIG, DS, world


def test_preview_of_a_user_not_due(tmp_path) -> None:
    lake, users, items = world(tmp_path)
    # u06 is weekly on Mondays and UTC: not due in DS's window, so the preview shows its Sunday slot.
    out = preview_digest(lake, DS, "u06", users, items, CONFIG, tmp_path / "preview" / "u06.html")
    html = out.read_text(encoding="utf-8")
    assert "Your weekly digest &middot; Sun 8 Mar" in html
    assert [t for t in ["Title of i10", "Title of i11", "Title of i12"] if t in html] == [
        "Title of i10",
        "Title of i11",
        "Title of i12",
    ]
    with pytest.raises(ValueError, match="no fresh candidates"):
        preview_digest(lake, DS, "u07", users, items, CONFIG, tmp_path / "u07.html")
    html = preview_digest(lake, DS, "u02", users, items, CONFIG, tmp_path / "u02.html").read_text(
        encoding="utf-8"
    )
    assert [t for t in ["Title of i01", "Title of i02", "Title of i03"] if t in html] == [
        "Title of i01",
        "Title of i02",
        "Title of i03",
    ]
    with pytest.raises(ValueError, match="not in the users table"):
        preview_digest(lake, DS, "nobody", users, items, CONFIG, tmp_path / "x.html")
