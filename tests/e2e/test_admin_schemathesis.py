"""Schemathesis against the admin API as served: every `/admin/v1` operation of the
app's own OpenAPI document, with valid and invalid inputs generated from it, sent with
an admin key to a real server, on `memory://` and on the local Redis. No input may get
a 5xx.

Two adjustments keep the generated cases from stopping at the first check:
- The request bodies refuse unknown fields, which Litestar does not write into the
  document; the test closes its object schemas (`additionalProperties: false`) so
  valid cases are valid.
- Half the cases of an operation under `/tenants/{tenant_id}` name a tenant (and a key)
  that exists, so they reach the handlers instead of a 404.

Hypothesis drives each operation's strategies directly (`schemathesis.pytest.from_fixture`
does not run under pytest 9), 40 examples per operation.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.admin_client import ADMIN_KEY, admin_http, serve_admin
from tests.conftest import REDIS_URL, gateway_config
from tests.fakes import FakeUpstream
from tests.local_redis import redis_prefix

EXAMPLES = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)
HEADERS = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module", params=["memory", "redis"])
def admin_url(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        store = "memory://"
        if request.param == "redis":
            store = f"{REDIS_URL}?prefix={stack.enter_context(redis_prefix('rgtest-fuzz'))}"
        raw = gateway_config(upstream.url, store=store)  # type: ignore[attr-defined]
        yield stack.enter_context(serve_admin(raw))


def closed(document: dict[str, Any]) -> dict[str, Any]:
    for component in document.get("components", {}).get("schemas", {}).values():
        if component.get("type") == "object" and "properties" in component:
            component["additionalProperties"] = False
    return document


def seeded(http: httpx.Client, template: str) -> dict[str, str]:
    """Path parameters naming a fresh tenant (and key) when the path has them."""
    if "{tenant_id}" not in template:
        return {}
    tenant = f"fz-{uuid.uuid4().hex[:8]}"
    assert http.post("/admin/v1/tenants", json={"id": tenant}).status_code == 201
    fixed = {"tenant_id": tenant}
    if "{key_id}" in template:
        fixed["key_id"] = http.post(f"/admin/v1/tenants/{tenant}/keys", json={}).json()["id"]
    return fixed


def fuzz(operation: Any, fixed: dict[str, str], url: str) -> None:
    variants = [
        operation.as_strategy(mode, **({"path_parameters": params} if params else {}))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        for params in ({}, fixed)
    ]

    @given(case=st.one_of(variants))
    @EXAMPLES
    def run(case: Any) -> None:
        case.call_and_validate(base_url=url, headers=HEADERS, checks=[not_a_server_error])

    run()


def test_no_input_gets_a_server_error(admin_url: str) -> None:
    document = closed(httpx.get(admin_url + "/openapi/openapi.json").json())
    schema = schemathesis.openapi.from_dict(document).include(path_regex="^/admin/v1/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    with admin_http(admin_url) as http:
        for operation in operations:
            fuzz(operation, seeded(http, operation.path), admin_url)
