"""Digest links: tracking parameters, hostile URLs and unsubscribe tokens."""

from __future__ import annotations

import hashlib
import hmac
import string
from urllib.parse import urlencode

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.links import (
    MAC_CHARS,
    UnsubscribeLinks,
    tracked_link_parts,
    unsubscribe_link,
    unsubscribe_token,
    verify_unsubscribe_token,
)
from tests.pipelines.delivery.digests.digest_world import DS


def tracked_link(url: str | None, item_id: str) -> str:
    return "tok".join(tracked_link_parts(url, item_id, DS, "https://nf.example"))


def test_tracked_link() -> None:
    link = tracked_link("https://Posts.example/a/b?q=1&utm_source=x#top", "i1")
    assert link == (
        "https://posts.example/a/b?q=1&utm_source=nightfeed&utm_medium=email"
        "&utm_campaign=digest-2026-03-07&nf_mid=tok#top"
    )
    fallback = "https://nf.example/items/i%2F1?utm_source=nightfeed&utm_medium=email&utm_campaign=digest-2026-03-07&nf_mid=tok"
    for hostile in [
        "javascript:alert(1)",
        "https://good.example@evil.example/",
        "https://x.example/a b",
        None,
        "/rel",
    ]:
        assert tracked_link(hostile, "i/1") == fallback, hostile


def test_unsubscribe_token_is_hmac_sha256() -> None:
    config = DigestConfig(unsubscribe_secret="a-long-enough-secret", unsubscribe_key_id="k7")
    message = b"nightfeed-unsubscribe\0k7\x0020260605\0u01"
    mac = hmac.new(b"a-long-enough-secret", message, hashlib.sha256).hexdigest()[:32]
    token = unsubscribe_token("u01", DS, config)
    assert token == f"k7.20260605.{mac}"  # DS + 90 days
    assert verify_unsubscribe_token("u01", token, config, DS)
    assert not verify_unsubscribe_token("u02", token, config, DS)
    other = DigestConfig(unsubscribe_secret="another-long-secret!", unsubscribe_key_id="k7")
    assert not verify_unsubscribe_token("u01", token, other, DS)


def test_an_unsubscribe_link_is_its_parts_put_together_as_urlencode_writes_it() -> None:
    config = DigestConfig(unsubscribe_key_id="k-7_b")
    links = UnsubscribeLinks(DS, config)
    for user_id in ["u01", "a b+c/é&=?", "x" * 40, "~.-_"]:
        user, mac = links.parts(user_id)
        query = urlencode({"u": user_id, "t": unsubscribe_token(user_id, DS, config)})
        assert f"{links.before}{user}{links.between}{mac}" == f"{config.unsubscribe_url}?{query}"
        assert unsubscribe_link(user_id, DS, config) == f"{config.unsubscribe_url}?{query}"
        # Parts a stencil can take: characters quoted-printable writes as they are, no blanks.
        assert len(mac) == MAC_CHARS and set(user + mac) <= set(string.printable[:94]) - {"="}
