"""Device management.

spec: client-server-api modules/device_management (GET /devices, GET/PUT/DELETE /devices/{deviceId},
POST /delete_devices). Deleting devices asks for the password again (the module's security
considerations), through user-interactive authentication.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, client_ip, read
from homeserver.api.http import Router, json_response
from homeserver.auth.accounts import MAX_DEVICE_NAME_CHARS
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class UpdateDeviceBody(Body):
    display_name: str | None = Field(default=None, max_length=MAX_DEVICE_NAME_CHARS)


class DeleteDeviceBody(Body):
    auth: Any = None


class DeleteDevicesBody(Body):
    devices: list[str]
    auth: Any = None


def device_json(device_id: str, device: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"device_id": device_id}
    for key in ("display_name", "last_seen_ip", "last_seen_ts"):
        if device.get(key) is not None:
            out[key] = device[key]
    return out


def register(router: Router, hs: HomeServer) -> None:
    async def list_devices(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        devices = [device_json(d, info) for d, info in hs.accounts.devices(requester.user_id)]
        return json_response({"devices": devices})

    async def get_device(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        device_id = request.match_info["device_id"]
        device = hs.accounts.device(requester.user_id, device_id)
        if device is None:
            raise MatrixError(404, "M_NOT_FOUND", "no such device")
        return json_response(device_json(device_id, device))

    async def put_device(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, UpdateDeviceBody, allow_empty=True)
        # spec: only application services may create devices here; users update their own
        if not await hs.accounts.update_device(requester.user_id, request.match_info["device_id"], body.display_name):
            raise MatrixError(404, "M_NOT_FOUND", "no such device")
        return json_response({})

    async def delete_device(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, DeleteDeviceBody, allow_empty=True)
        hs.auth.refuse_oauth_uia(requester)
        session = await hs.uia.authenticate(
            body.auth,
            hs.uia.flows_for(requester.user_id),
            kind="delete_devices",
            user_id=requester.user_id,
            ip=client_ip(request),
            action="delete_device",
        )
        # spec: 200 also when the device had been removed already
        await hs.accounts.delete_devices(requester.user_id, [request.match_info["device_id"]])
        hs.uia.forget(session)
        return json_response({})

    async def delete_devices(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, DeleteDevicesBody)
        hs.auth.refuse_oauth_uia(requester)
        session = await hs.uia.authenticate(
            body.auth,
            hs.uia.flows_for(requester.user_id),
            kind="delete_devices",
            user_id=requester.user_id,
            ip=client_ip(request),
            action="delete_devices",
        )
        await hs.accounts.delete_devices(requester.user_id, body.devices)
        hs.uia.forget(session)
        return json_response({})

    # spec: guest access — guests may list, read and rename their devices, not delete them
    router.client("GET", "/devices", list_devices, guests=True)
    router.client("GET", "/devices/{device_id}", get_device, guests=True)
    router.client("PUT", "/devices/{device_id}", put_device, guests=True)
    router.client("DELETE", "/devices/{device_id}", delete_device)
    router.client("POST", "/delete_devices", delete_devices)
