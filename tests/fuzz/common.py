"""What both schemathesis runs share (the client-server one, test_schemathesis.py, and the
server-server one, test_schemathesis_federation.py): the seed, the schemathesis settings that make
a run repeatable, and the check of each answer against the server's log."""

from __future__ import annotations

import os

import requests
import schemathesis
from schemathesis.checks import not_a_server_error

from tests.interop.server import RunningServer

SEED = int(os.environ.get("FUZZ_SEED", "20261207"))
REQUEST_TIMEOUT_S = 30.0


def fuzz_config(max_examples: int) -> schemathesis.Config:
    """Valid and invalid requests from the fixed `SEED`, only `not_a_server_error` checked."""
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],  # slow generation on big schemas is expected, not a failure
            "generation": {
                "mode": "all",  # valid and invalid requests
                "max-examples": max_examples,
                "database": "none",  # no replay of earlier runs' failures: same seed, same requests
                # the credentials (an access token, an X-Matrix signature) are the test's, not generated
                "with-security-parameters": False,
            },
            # Schemathesis learns from responses by default (ids seen in answers, error messages);
            # answers hold ids the server draws at random, so that would make runs differ.
            "phases": {
                "examples": {"extra-data-sources": {"responses": False}},
                "coverage": {"extra-data-sources": {"responses": False}},
                "fuzzing": {"extra-data-sources": {"responses": False}, "error-feedback": {"enabled": False}},
                "stateful": {"enabled": False},
            },
            "checks": {"enabled": False, "not_a_server_error": {"enabled": True}},
            "request-timeout": REQUEST_TIMEOUT_S,
            # The reproduction must show the exact request (keys, tokens of throwaway users included).
            "output": {"sanitization": {"enabled": False}},
        }
    )


def log_size(server: RunningServer) -> int:
    try:
        return server.log_path.stat().st_size
    except OSError:
        return 0


def log_since(server: RunningServer, offset: int, limit: int = 8000) -> str:
    """The last `limit` characters the server logged after `offset`."""
    with server.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")[-limit:]


def check_answer(case: schemathesis.Case, response: requests.Response, server: RunningServer, offset: int) -> None:
    """No 5xx (with the server's log of the request below the reproduction), and the server alive."""
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except BaseException as failures:  # schemathesis's FailureGroup is a BaseExceptionGroup
        # The traceback `guard` logged for this request, shown below the reproduction.
        failures.add_note(f"server log during the request:\n{log_since(server, offset) or '(nothing)'}")
        raise
    assert server.alive(), f"the server died; log:\n{server.log_tail()}"
