"""Content repository routes. spec: client-server-api "Content repository" (modules/content_repo).

- uploads: POST /_matrix/media/v3/upload, POST /_matrix/media/v1/create,
  PUT /_matrix/media/v3/upload/{serverName}/{mediaId} (r0 aliases for older clients);
- authenticated (v1.11): /_matrix/client/v1/media/{download,thumbnail,config,preview_url};
- deprecated /_matrix/media/{v3,r0}/{download,thumbnail} without a token, "frozen" (spec: 1.12
  freeze): they serve nothing uploaded since the freeze, which for this server is everything;
  /_matrix/media/v3/{config,preview_url} still work with a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, query_bool, query_int
from homeserver.errors import MatrixError
from homeserver.media.headers import clean_content_type, serving_headers

if TYPE_CHECKING:
    from homeserver.media.repository import StoredMedia
    from homeserver.server import HomeServer

CHUNK = 64 * 1024
LEGACY = ("v3", "r0")


def register(router: Router, hs: HomeServer) -> None:
    # `hs.media` is read per request: the repository (and its modules) is made on first use
    # -- uploads ---------------------------------------------------------------------------------

    def upload_args(request: web.Request) -> tuple[str, str | None]:
        return clean_content_type(request.headers.get("Content-Type")), request.query.get("filename")

    async def upload(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("media", requester.user_id)
        content_type, filename = upload_args(request)
        uri = await hs.media.upload(
            requester.user_id,
            request.content.iter_chunked(CHUNK),
            content_type=content_type,
            filename=filename,
            content_length=request.content_length,
        )
        return json_response({"content_uri": uri})

    async def create(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("media", requester.user_id)
        uri, expires_at = await hs.media.create(requester.user_id)
        return json_response({"content_uri": uri, "unused_expires_at": expires_at})

    async def upload_to(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("media", requester.user_id)
        content_type, filename = upload_args(request)
        await hs.media.upload_to(
            requester.user_id,
            request.match_info["serverName"],
            request.match_info["mediaId"],
            request.content.iter_chunked(CHUNK),
            content_type=content_type,
            filename=filename,
            content_length=request.content_length,
        )
        return json_response({})

    for v in LEGACY:
        router.add("POST", f"/_matrix/media/{v}/upload", upload)
        router.add("PUT", f"/_matrix/media/{v}/upload/{{serverName}}/{{mediaId}}", upload_to)
    router.add("POST", "/_matrix/media/v1/create", create)

    # -- downloads and thumbnails ----------------------------------------------------------------

    def serve(media: StoredMedia, filename: str | None) -> web.StreamResponse:
        return web.FileResponse(media.path, headers=serving_headers(media.content_type, filename))

    async def download(request: web.Request, *, authenticated: bool) -> web.StreamResponse:
        if authenticated:
            hs.auth.requester(request)
        media = await hs.media.get(
            request.match_info["serverName"],
            request.match_info["mediaId"],
            timeout_ms=query_int(request, "timeout_ms"),
            allow_remote=query_bool(request, "allow_remote", True),
            authenticated=authenticated,
        )
        return serve(media, request.match_info.get("fileName") or media.filename)

    async def thumbnail(request: web.Request, *, authenticated: bool) -> web.StreamResponse:
        if authenticated:
            hs.auth.requester(request)
        width = query_int(request, "width", minimum=1)
        height = query_int(request, "height", minimum=1)
        if width is None or height is None:
            raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
        result = await hs.media.thumbnail(
            request.match_info["serverName"],
            request.match_info["mediaId"],
            width=width,
            height=height,
            method=request.query.get("method", "scale"),
            animated=query_bool(request, "animated", False),
            timeout_ms=query_int(request, "timeout_ms"),
            allow_remote=query_bool(request, "allow_remote", True),
            authenticated=authenticated,
        )
        from homeserver.media.repository import StoredMedia

        if isinstance(result, StoredMedia):  # the original already fits the request
            ext = result.content_type.split("/", 1)[1].split(";", 1)[0].strip() or "bin"
            headers = serving_headers(result.content_type, f"thumbnail.{ext}", force_inline=True)
            return web.FileResponse(result.path, headers=headers)
        ext = result.path.suffix or ".png"
        # spec: thumbnails MUST be served inline, with a file name such as thumbnail.png
        headers = serving_headers(result.content_type, f"thumbnail{ext}", force_inline=True)
        return web.FileResponse(result.path, headers=headers)

    async def download_authed(request: web.Request) -> web.StreamResponse:
        return await download(request, authenticated=True)

    async def download_legacy(request: web.Request) -> web.StreamResponse:
        return await download(request, authenticated=False)

    async def thumbnail_authed(request: web.Request) -> web.StreamResponse:
        return await thumbnail(request, authenticated=True)

    async def thumbnail_legacy(request: web.Request) -> web.StreamResponse:
        return await thumbnail(request, authenticated=False)

    authed = "/_matrix/client/v1/media"
    # spec: guest access (v1.12) — guests may download media and thumbnails, not upload
    router.add("GET", f"{authed}/download/{{serverName}}/{{mediaId}}", download_authed, guests=True)
    router.add("GET", f"{authed}/download/{{serverName}}/{{mediaId}}/{{fileName}}", download_authed, guests=True)
    router.add("GET", f"{authed}/thumbnail/{{serverName}}/{{mediaId}}", thumbnail_authed, guests=True)
    for v in LEGACY:
        router.add("GET", f"/_matrix/media/{v}/download/{{serverName}}/{{mediaId}}", download_legacy)
        router.add("GET", f"/_matrix/media/{v}/download/{{serverName}}/{{mediaId}}/{{fileName}}", download_legacy)
        router.add("GET", f"/_matrix/media/{v}/thumbnail/{{serverName}}/{{mediaId}}", thumbnail_legacy)

    # -- config and URL previews -----------------------------------------------------------------

    async def config(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        return json_response({"m.upload.size": hs.config.max_upload_size})

    async def preview_url(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        url = request.query.get("url")
        if not url:
            raise MatrixError(400, "M_MISSING_PARAM", "url is required")
        query_int(request, "ts")  # validated; we always answer with the latest preview we have
        hs.ratelimiter.check("media", requester.user_id)
        return json_response(await hs.url_previews.preview(requester.user_id, url))

    router.add("GET", f"{authed}/config", config)
    router.add("GET", f"{authed}/preview_url", preview_url)
    for v in LEGACY:
        router.add("GET", f"/_matrix/media/{v}/config", config)
        router.add("GET", f"/_matrix/media/{v}/preview_url", preview_url)
