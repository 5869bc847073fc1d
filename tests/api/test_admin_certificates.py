"""GET /_homeserver/admin/v1/certificates: the ACME certificate's state, for admins only.
(Obtaining and renewing against a real CA: tests/acme/.)"""

from __future__ import annotations

import pytest

from .conftest import Harness

PATH = "/_homeserver/admin/v1/certificates"
PUBLIC = {"public": {"domain": "hs.test", "email": "admin@hs.test", "http_port": 8080, "https_port": 8443}}


@pytest.mark.parametrize("harness", [PUBLIC], indirect=True)
async def test_an_admin_sees_the_certificate_state(harness: Harness) -> None:
    admin = await harness.user("root", admin=True)
    status, body = await harness.request("GET", PATH, admin)
    assert status == 200
    (cert,) = body["certificates"]
    assert cert["domain"] == "hs.test"
    assert cert["acme_directory"] == "https://acme-v02.api.letsencrypt.org/directory"
    assert cert["state"] == "pending" and cert["serial"] is None  # not started: nothing obtained yet
    assert cert["challenge"] is None  # no order tried yet
    user = await harness.user("alice")
    status, body = await harness.request("GET", PATH, user)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("harness", [PUBLIC], indirect=True)
async def test_discovery_is_filled_in_from_the_domain(harness: Harness) -> None:
    status, body = await harness.request("GET", "/.well-known/matrix/server")
    assert status == 200 and body == {"m.server": "hs.test:8443"}
    status, body = await harness.request("GET", "/.well-known/matrix/client")
    assert status == 200 and body["m.homeserver"]["base_url"] == "https://hs.test:8443"


async def test_without_a_domain_it_is_404(harness: Harness) -> None:
    admin = await harness.user("root", admin=True)
    status, body = await harness.request("GET", PATH, admin)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
