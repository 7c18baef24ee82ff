"""Digest links: tracking parameters, hostile URLs and unsubscribe tokens."""

from __future__ import annotations

from pipelines.delivery.digests.links import tracked_link, unsubscribe_token, verify_unsubscribe_token
from tests.pipelines.delivery.digests.digest_world import DS


def test_tracked_link() -> None:
    link = tracked_link(
        "https://Posts.example/a/b?q=1&utm_source=x#top", "i1", DS, "tok", "https://nf.example"
    )
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
        assert tracked_link(hostile, "i/1", DS, "tok", "https://nf.example") == fallback, hostile


def test_unsubscribe_token_is_hmac_sha256() -> None:
    # RFC 4231 test case 2: HMAC-SHA256(key="Jefe", "what do ya want for nothing?") = 5bdcc146bf60754e6a04...
    assert unsubscribe_token("what do ya want for nothing?", "Jefe") == "5bdcc146bf60754e6a042426089575c7"
    token = unsubscribe_token("u01", "a-long-enough-secret")
    assert verify_unsubscribe_token("u01", token, "a-long-enough-secret")
    assert not verify_unsubscribe_token("u02", token, "a-long-enough-secret")
    assert not verify_unsubscribe_token("u01", token, "another-long-secret!")
