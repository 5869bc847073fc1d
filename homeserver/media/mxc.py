"""`mxc://` URIs and media ids. spec: content_repo "Matrix Content (mxc://) URIs", "Security considerations"."""

from __future__ import annotations

import re
import secrets
import string

from homeserver.errors import MatrixError
from homeserver.protocol.identifiers import is_valid_server_name

# spec: the media-id segment MUST consist only of A-Za-z0-9, _ and -
_MEDIA_ID = re.compile(r"[A-Za-z0-9_\-]{1,255}")
_ALPHABET = string.ascii_letters + string.digits
MEDIA_ID_LENGTH = 24


def new_media_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(MEDIA_ID_LENGTH))


def is_valid_media_id(media_id: str) -> bool:
    return _MEDIA_ID.fullmatch(media_id) is not None


def check_media_path(server_name: str, media_id: str) -> None:
    """Refuse path segments that could escape the media store. spec: homeservers MUST sanitise mxc URIs."""
    if not is_valid_server_name(server_name):
        raise MatrixError(400, "M_INVALID_PARAM", "serverName is not a valid server name")
    if not is_valid_media_id(media_id):
        raise MatrixError(400, "M_INVALID_PARAM", "mediaId may only hold A-Z, a-z, 0-9, _ and -")


def mxc_uri(server_name: str, media_id: str) -> str:
    return f"mxc://{server_name}/{media_id}"


def parse_mxc(uri: str) -> tuple[str, str] | None:
    """(server name, media id) of a well-formed `mxc://` URI, else None."""
    if not uri.startswith("mxc://"):
        return None
    server_name, sep, media_id = uri[len("mxc://") :].partition("/")
    if not sep or not is_valid_server_name(server_name) or not is_valid_media_id(media_id):
        return None
    return server_name, media_id
