"""`Content-Disposition: attachment` for downloads, one way everywhere (RFC 6266 with RFC 5987 encoding).

Invariant: whatever a file name holds (a query parameter, non-ASCII, quotes, CR/LF, other controls), the
header is pure ASCII with no control characters, so it can neither inject a header nor make the server
drop the connection. `filename=` carries an ASCII fallback (unsafe characters become `_`); `filename*=`
carries the name itself as UTF-8, percent-encoded outside RFC 5987's attr-char set.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

# RFC 5987 attr-char, besides ALPHA and DIGIT (quote() keeps those unescaped)
_ATTR_CHAR_PUNCTUATION = "!#$&+-.^_`|~"
_FALLBACK_UNSAFE = set('"\\%/;')
_BREAKS = {"Zl", "Zp"}


def _visible(name: str) -> str:
    """The name without control characters (C0, DEL, C1, other "C*" categories) or line/paragraph separators."""
    kept = (
        ch for ch in name if not unicodedata.category(ch).startswith("C") and unicodedata.category(ch) not in _BREAKS
    )
    return "".join(kept).strip() or "download"


def attachment(file_name: str) -> str:
    name = _visible(file_name)
    fallback = "".join(ch if " " <= ch <= "~" and ch not in _FALLBACK_UNSAFE else "_" for ch in name)
    encoded = quote(name, safe=_ATTR_CHAR_PUNCTUATION, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
