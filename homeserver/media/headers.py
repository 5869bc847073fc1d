"""Headers for serving media: Content-Type, Content-Disposition and the sandboxing headers.

spec: content_repo "Serving inline content", the CSP recommendation, and the download endpoints'
Content-Disposition rules (inline for safe types, attachment otherwise, the upload's filename).
"""

from __future__ import annotations

from urllib.parse import quote

DEFAULT_CONTENT_TYPE = "application/octet-stream"

# spec: content_repo "Serving inline content" — the only types served with `inline`
INLINE_SAFE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# spec: content_repo — the recommended policy, plus CORP (added in v1.4)
SANDBOX_HEADERS = {
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
        "style-src 'unsafe-inline'; object-src 'self';"
    ),
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}

# RFC 5987 attr-char: what may stand unescaped in filename*=
_ATTR_CHARS = "!#$&+-.^_`|~"
# characters that may stand in a quoted filename= without trouble in any client
_QUOTABLE = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\", "%"}


def media_type(content_type: str) -> str:
    """The bare, lower-case media type of a Content-Type value (parameters dropped)."""
    return content_type.split(";", 1)[0].strip().lower()


def is_inline_safe(content_type: str) -> bool:
    return media_type(content_type) in INLINE_SAFE_TYPES


def clean_content_type(raw: str | None) -> str:
    """The Content-Type an upload is stored with: the client's, or octet-stream if absent or unusable."""
    if raw is None:
        return DEFAULT_CONTENT_TYPE
    value = raw.strip()
    if not value or len(value) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or "/" not in value:
        return DEFAULT_CONTENT_TYPE
    return value


def content_disposition(content_type: str, filename: str | None, *, force_inline: bool = False) -> str:
    """`inline` for the safe types, `attachment` otherwise; the filename in RFC 6266/5987 form.

    ASCII names go in a quoted `filename=`; anything else in `filename*=utf-8''…` (percent-encoded,
    so no header injection is possible whatever the name holds).
    """
    disposition = "inline" if force_inline or is_inline_safe(content_type) else "attachment"
    if not filename:
        return disposition
    if all(c in _QUOTABLE for c in filename):
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename*=utf-8''{quote(filename, safe=_ATTR_CHARS)}"


def serving_headers(content_type: str, filename: str | None, *, force_inline: bool = False) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(content_type, filename, force_inline=force_inline),
        **SANDBOX_HEADERS,
    }
