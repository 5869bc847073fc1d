"""Our server and Synapse federating over TLS on loopback, each through its own real stack.

spec: server-server-api "Retrieving server keys", "Request Authentication", "Querying for
information". Both servers are named `127.0.0.1:<TLS port>` (no discovery); each trusts the test CA.
"""

from __future__ import annotations

import urllib.parse

from .server import RunningServer, http_json, register


def quoted(user_id: str) -> str:
    return urllib.parse.quote(user_id, safe="")


def test_synapse_reads_our_profiles_over_federation(synapse: RunningServer, ours: RunningServer) -> None:
    """Synapse fetches our key, checks our answer's TLS and asks with X-Matrix, which we verify."""
    alice, alice_token = register(ours, "alice")
    http_json(
        "PUT",
        f"{ours.base_url}/_matrix/client/v3/profile/{quoted(alice)}/displayname",
        {"displayname": "Alice"},
        alice_token,
    )
    _, bob_token = register(synapse, "bob")
    answer = http_json("GET", f"{synapse.base_url}/_matrix/client/v3/profile/{quoted(alice)}", token=bob_token)
    assert answer.get("displayname") == "Alice"
