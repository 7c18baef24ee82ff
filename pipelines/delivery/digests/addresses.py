"""Recipient e-mail addresses: digests go to plain ASCII ``local@domain.tld`` addresses only.

The whole value must match (no trailing newline slips through as it would with ``$``): no whitespace,
no CR or LF, no control characters, at most 254 characters.
"""

from __future__ import annotations

import re

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)


def is_valid_email(address: str | None) -> bool:
    """True for a plain ASCII ``local@domain.tld`` address of at most 254 characters, nothing around it."""
    if not isinstance(address, str) or not address or len(address) > 254 or not address.isascii():
        return False
    if not address.isprintable():  # ASCII: a control character (below 0x20, or DEL)
        return False
    return _EMAIL_RE.fullmatch(address) is not None
