"""Links in a digest and the tokens they carry.

Reading links carry ``utm_source=nightfeed``, ``utm_medium=email``, ``utm_campaign=digest-<ds>`` and
``nf_mid=<message token>``; only absolute http(s) links with a plain host and no credentials are kept,
others point to the item's page on ``base_url``. The unsubscribe URL carries the user id and a token
``<key id>.<expiry YYYYMMDD>.<HMAC-SHA256>`` signed with ``unsubscribe_secret``; the expiry is a function
of ``ds``, so a rerun writes the same bytes. It is one-click (RFC 8058): a POST unsubscribes, a GET should
only show a confirmation, since link scanners follow links.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

from pipelines.core.settings import DigestConfig
from pipelines.delivery.digests.text import clean_text

TRACKING_PARAMS: tuple[str, ...] = ("utm_source", "utm_medium", "utm_campaign", "nf_mid")
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::\d{1,5})?$")
_URL_SAFE = "/%:@!$&'()*+,;=-._~"
_TOKEN_EXPIRY_RE = re.compile(r"[0-9]{8}")


MAC_CHARS = 32  # hex digits of an unsubscribe token's HMAC-SHA256


def _token_mac(user_id: str, key_id: str, expires: str, secret: str) -> str:
    message = f"nightfeed-unsubscribe\0{key_id}\0{expires}\0{user_id}".encode()
    return hmac.digest(secret.encode(), message, "sha256").hex()[:MAC_CHARS]


def _expiry(ds: dt.date, config: DigestConfig) -> str:
    return f"{ds + dt.timedelta(days=config.unsubscribe_token_days):%Y%m%d}"


def unsubscribe_token(user_id: str, ds: dt.date, config: DigestConfig) -> str:
    """The unsubscribe token of ``user_id`` in the digest of ``ds``: ``<key id>.<expiry>.<mac>``.

    The expiry is ``ds`` plus ``unsubscribe_token_days`` (``YYYYMMDD``); the MAC is HMAC-SHA256, keyed with
    ``unsubscribe_secret``, of the key id, the expiry and the user id (first 32 hex digits).
    """
    expires, key_id = _expiry(ds, config), config.unsubscribe_key_id
    return f"{key_id}.{expires}.{_token_mac(user_id, key_id, expires, config.unsubscribe_secret)}"


def verify_unsubscribe_token(user_id: str, token: str, config: DigestConfig, today: dt.date) -> bool:
    """True when ``token`` is an unexpired unsubscribe token of ``user_id`` signed with a configured key.

    Tokens signed with a key of ``unsubscribe_previous_keys`` keep verifying until they expire; the MACs
    are compared in constant time.
    """
    key_id, _, rest = token.partition(".")
    expires, _, mac = rest.partition(".")
    secret = config.verification_keys().get(key_id)
    if secret is None or not _TOKEN_EXPIRY_RE.fullmatch(expires):
        return False
    valid = hmac.compare_digest(_token_mac(user_id, key_id, expires, secret).encode(), mac.encode())
    return valid and today.strftime("%Y%m%d") <= expires


def unsubscribe_link(user_id: str, ds: dt.date, config: DigestConfig) -> str:
    """The one-click unsubscribe URL of ``user_id`` in the digest of ``ds``: GET shows a confirmation, POST
    unsubscribes."""
    return UnsubscribeLinks(ds, config).link(user_id)


class UnsubscribeLinks:
    """The unsubscribe URLs of the digests of ``ds``: ``before``, the quoted user id, ``between``, the MAC.

    ``before`` (up to ``?u=``) and ``between`` (``&t=<key id>.<expiry>.``) are the same in every digest of
    ``ds``; the user id is written as ``urlencode`` writes it, the token's key id, expiry and hex digits as
    they are (quoting leaves those characters alone), so the parts put together are the URL of
    :func:`unsubscribe_link`.
    """

    def __init__(self, ds: dt.date, config: DigestConfig) -> None:
        self._key_id, self._expires = config.unsubscribe_key_id, _expiry(ds, config)
        self._secret = config.unsubscribe_secret
        self.before = f"{config.unsubscribe_url}?u="
        self.between = f"&t={quote_plus(self._key_id, safe='')}.{self._expires}."

    def parts(self, user_id: str) -> tuple[str, str]:
        """The per-user parts of the URL of ``user_id``: the quoted user id and the MAC (``MAC_CHARS``)."""
        return quote_plus(user_id, safe=""), _token_mac(user_id, self._key_id, self._expires, self._secret)

    def link(self, user_id: str) -> str:
        """The unsubscribe URL of ``user_id``."""
        user, mac = self.parts(user_id)
        return f"{self.before}{user}{self.between}{mac}"


def message_token(ds: dt.date, user_id: str) -> str:
    """Stable id of the digest of ``user_id`` for ``ds``: in the Message-ID, links and MIME boundary."""
    return hashlib.sha256(f"nightfeed-digest\0{ds}\0{user_id}".encode()).hexdigest()[:24]


def tracked_link_parts(url: str | None, item_id: str, ds: dt.date, base_url: str) -> tuple[str, str]:
    """The reading link of an item with the digest's tracking parameters, cut where its message token goes:
    the text before the token (ending in ``nf_mid=``) and after it (the fragment, if any), the same for
    every digest of ``ds``.

    Only an absolute http(s) URL with a plain host is kept (no ``javascript:``, no ``user@host``
    tricks, no spaces); anything else links to the item's page on ``base_url``. Existing query
    parameters stay, tracking parameters already there are replaced.
    """
    parts = _safe_url_parts(url)
    if parts is None:
        parts = urlsplit(f"{base_url.rstrip('/')}/items/{quote(item_id, safe='')}")
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TRACKING_PARAMS]
    query = f"{urlencode(kept, quote_via=quote)}&{_tracking(ds)}" if kept else _tracking(ds)
    before = urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), quote(parts.path, safe=_URL_SAFE), query, "")
    )
    fragment = quote(parts.fragment, safe=_URL_SAFE)
    return before, f"#{fragment}" if fragment else ""


@functools.lru_cache(maxsize=16)
def _tracking(ds: dt.date) -> str:
    """The tracking parameters of the digests of ``ds``, encoded, ending in ``nf_mid=``."""
    params = [
        ("utm_source", "nightfeed"),
        ("utm_medium", "email"),
        ("utm_campaign", f"digest-{ds}"),
        ("nf_mid", ""),
    ]
    return urlencode(params, quote_via=quote)


def _safe_url_parts(url: str | None):
    url = clean_text(url)  # any whitespace left in it is a single space
    if not url or " " in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not _HOST_RE.match(parts.netloc):
        return None
    return parts
