"""The API fuzzed from its own OpenAPI schema (schemathesis, property-based): every operation,
anonymous and signed in, with a bounded number of generated requests each.

Checked on every response: no 5xx; the status code, content type, headers and body are the
ones the schema documents (errors included); and no personal field (an email address, a
username or a city of any user) appears in it. The counts of requests and of 5xx answers are
written to ``fuzz_counts.json`` in the test's temporary folder and printed.
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi import checks as oa_checks

from vs_lib import api, testing

MAX_EXAMPLES = 25  # generated requests per operation and requester: keeps the whole run to about a minute
COUNTS = {"requests": 0, "server_errors": 0, "anonymous": 0, "signed_in": 0}
EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


@pytest.fixture(scope="module")
def fuzz_platform(tmp_path_factory):
    paths = testing.build_small_platform(tmp_path_factory.mktemp("fuzz_platform"), 400, n_users=6, seed=5)
    conn = sqlite3.connect(paths["db"])
    personal = {v for row in conn.execute("SELECT username, email, city FROM users") for v in row if v}
    conn.close()
    return paths, personal


@pytest.fixture(scope="module")
def fuzz_app(fuzz_platform, tmp_path_factory):
    paths, _ = fuzz_platform
    svc = testing.open_small_platform(paths)
    yield api.create_app(svc)
    svc.close()
    out = tmp_path_factory.getbasetemp() / "fuzz_counts.json"
    out.write_text(json.dumps(COUNTS))
    print(f"\nschemathesis: {COUNTS}")


@pytest.fixture(scope="module")
def token(fuzz_platform):
    return testing.issue_token(fuzz_platform[0], 2)


CHECKS = [
    oa_checks.status_code_conformance,
    oa_checks.content_type_conformance,
    oa_checks.response_headers_conformance,
    oa_checks.response_schema_conformance,
]


def _operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


def test_api_from_its_schema(fuzz_app, token, fuzz_platform):
    _, personal = fuzz_platform
    operations = _operations(fuzz_app)
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /search", "POST /images", "GET /images/{image_id}", "DELETE /images/{image_id}",
        "GET /corpus/random", "POST /auth/session", "GET /auth/session", "DELETE /auth/session", "GET /health",
    }  # fmt: skip
    for op in operations:

        @given(case=op.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            for who, headers in (("anonymous", {}), ("signed_in", {"Authorization": f"Bearer {token}"})):
                response = case.call(headers={**(case.headers or {}), **headers})
                COUNTS["requests"] += 1
                COUNTS[who] += 1
                COUNTS["server_errors"] += int(response.status_code >= 500)
                assert response.status_code < 500, (
                    who,
                    case.method,
                    case.path,
                    response.status_code,
                    response.text[:300],
                )
                case.validate_response(response, checks=CHECKS)
                if "json" in str(response.headers.get("content-type", "")):
                    assert not EMAIL.search(response.content), (who, case.path, response.content[:200])
                    text = response.content.decode("utf-8", "replace")
                    leaked = [v for v in personal if re.search(rf"\b{re.escape(v)}\b", text)]
                    assert not leaked, (who, case.path, leaked)

        fuzz()


def test_the_fuzzer_sent_requests_and_got_no_server_error():
    """Runs after the fuzzing above (same module, in order): it really ran, and found no 5xx."""
    assert COUNTS["anonymous"] > 20 and COUNTS["signed_in"] > 20, COUNTS
    assert COUNTS["server_errors"] == 0, COUNTS
