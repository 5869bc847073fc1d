"""Push rules (spec: modules/push.md "Push Rules: API"). Element fetches `GET /pushrules/` with the
trailing slash; both spellings are served."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_object, json_response
from homeserver.push import rules as push_rules

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class ActionsBody(Body):
    actions: Any  # checked by `push_rules.check_actions` (spec: M_INVALID_PARAM for bad actions)


class EnabledBody(Body):
    enabled: bool


def register(router: Router, hs: HomeServer) -> None:
    push = hs.push.rules

    def path(request: web.Request) -> tuple[str, str]:
        return request.match_info["kind"], request.match_info["ruleId"]

    async def get_all(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response({"global": push.ruleset(requester.user_id)})

    async def get_global(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response(push.ruleset(requester.user_id))

    async def get_rule(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        kind, rule_id = path(request)
        return json_response(push_rules.find(push.ruleset(requester.user_id), kind, rule_id))

    async def put_rule(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        kind, rule_id = path(request)
        body = await json_object(request)
        before, after = request.query.get("before"), request.query.get("after")
        await push.change_rules(
            requester.user_id, lambda record: push_rules.put_rule(record, kind, rule_id, body, before, after)
        )
        return json_response({})

    async def delete_rule(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        kind, rule_id = path(request)
        await push.change_rules(requester.user_id, lambda record: push_rules.delete_rule(record, kind, rule_id))
        return json_response({})

    def attribute(name: str) -> tuple[Any, Any]:
        async def get_attr(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            kind, rule_id = path(request)
            rule = push_rules.find(push.ruleset(requester.user_id), kind, rule_id)
            return json_response({name: rule.get(name, [] if name == "actions" else True)})

        async def put_attr(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            kind, rule_id = path(request)
            value: Any
            if name == "actions":
                value = push_rules.check_actions((await read(request, ActionsBody)).actions)
            else:
                value = (await read(request, EnabledBody)).enabled
            push_rules.find(push.ruleset(requester.user_id), kind, rule_id)  # 404 for an unknown rule
            await push.change_rules(
                requester.user_id, lambda record: push_rules.set_attribute(record, kind, rule_id, name, value)
            )
            return json_response({})

        return get_attr, put_attr

    router.client("GET", "/pushrules/", get_all)
    router.client("GET", "/pushrules", get_all)
    router.client("GET", "/pushrules/global/", get_global)
    router.client("GET", "/pushrules/global", get_global)
    router.client("GET", "/pushrules/global/{kind}/{ruleId}", get_rule)
    router.client("PUT", "/pushrules/global/{kind}/{ruleId}", put_rule)
    router.client("DELETE", "/pushrules/global/{kind}/{ruleId}", delete_rule)
    for name in ("actions", "enabled"):
        get_attr, put_attr = attribute(name)
        router.client("GET", f"/pushrules/global/{{kind}}/{{ruleId}}/{name}", get_attr)
        router.client("PUT", f"/pushrules/global/{{kind}}/{{ruleId}}/{name}", put_attr)
