"""Recipient e-mail addresses: digests go to plain ASCII ``local@domain.tld`` addresses only."""

from __future__ import annotations

import re

_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)


def is_valid_email(address: str | None) -> bool:
    """True for a plain ASCII ``local@domain.tld`` address of at most 254 characters."""
    return bool(address) and len(address) <= 254 and _EMAIL_RE.match(address) is not None
