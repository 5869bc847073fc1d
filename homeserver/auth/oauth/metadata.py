"""The authorization server metadata (RFC 8414) that clients discover the OAuth 2.0 API with.

spec: client-server-api GET /_matrix/client/v1/auth_metadata (oauth_server_metadata.yaml): every
required field; `prompt_values_supported: ["create"]` when accounts can be made; the device
authorization endpoint; `account_management_uri` with the actions it supports. Every URL is built
from `public_baseurl`, so it is https whenever that is (Element X refuses http metadata); the
issuer is the base URL with a slash and never has a query or fragment.

No `jwks_uri` and no ID tokens: the Matrix OAuth 2.0 API needs neither. Clients of the older
OpenID Connect drafts (matrix-js-sdk up to 41, which fetch the signing keys through oidc-client-ts)
fail their discovery on that and keep to the legacy login API, which works as before.
"""

from __future__ import annotations

from typing import Any

from homeserver.auth.oauth.clients import GRANT_TYPES

OAUTH_PREFIX = "/_homeserver/oauth"
ACCOUNT_PATH = "/_homeserver/account"
AUTHORIZE_PATH = f"{OAUTH_PREFIX}/authorize"
TOKEN_PATH = f"{OAUTH_PREFIX}/token"
REGISTRATION_PATH = f"{OAUTH_PREFIX}/register"
REVOCATION_PATH = f"{OAUTH_PREFIX}/revoke"
DEVICE_AUTHORIZATION_PATH = f"{OAUTH_PREFIX}/device_authorization"
DEVICE_PAGE_PATH = f"{OAUTH_PREFIX}/device"

# spec: "Account management URL actions" — the stable names, advertised; the account page also
# answers the names of MSC4191's drafts that clients still send (UNSTABLE_ACTIONS).
ACTIONS = (
    "org.matrix.profile",
    "org.matrix.devices_list",
    "org.matrix.device_view",
    "org.matrix.device_delete",
    "org.matrix.account_deactivate",
    "org.matrix.cross_signing_reset",
)
UNSTABLE_ACTIONS = {
    "org.matrix.sessions_list": "org.matrix.devices_list",
    "org.matrix.session_view": "org.matrix.device_view",
    "org.matrix.session_end": "org.matrix.device_delete",
}


def server_metadata(base_url: str, *, signup: bool) -> dict[str, Any]:
    base = base_url.rstrip("/")
    metadata: dict[str, Any] = {
        "issuer": f"{base}/",
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "registration_endpoint": base + REGISTRATION_PATH,
        "revocation_endpoint": base + REVOCATION_PATH,
        "device_authorization_endpoint": base + DEVICE_AUTHORIZATION_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment"],
        "grant_types_supported": list(GRANT_TYPES),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": ["urn:matrix:client:api:*", "urn:matrix:client:device:*"],
        "account_management_uri": base + ACCOUNT_PATH,
        "account_management_actions_supported": list(ACTIONS),
    }
    if signup:
        metadata["prompt_values_supported"] = ["create"]
    return metadata
