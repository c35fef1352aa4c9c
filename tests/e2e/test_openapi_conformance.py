"""The running API against its own OpenAPI document, with schemathesis: generated requests, valid and
invalid, must never get a 5xx, and every answer must be one the document declares (status code,
content type, body schema)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_key(database) -> str:  # type: ignore[no-untyped-def]
    """A key of a tenant of its own, with every scope, so the generated calls reach every route."""
    from memsvc.tenants import create_api_key

    with database.session() as session:
        key: str = create_api_key(session, f"fuzz-{uuid.uuid4().hex[:8]}", scopes=["admin"])
    return key


def _openapi() -> dict[str, Any]:
    """The document the app serves at /openapi.json: built from the routes and models alone, so the
    tests can be generated before the server (a fixture) exists."""
    from memsvc.api import create_app

    document: dict[str, Any] = create_app(None, None).openapi()  # type: ignore[arg-type]
    return document


CONFIG = schemathesis.Config.from_dict(
    {
        "generation": {"mode": "all", "max-examples": 20, "deterministic": True},
        # The coverage phase alone is hundreds of requests per route; the examples and fuzzing
        # phases keep the run near a minute on two cores.
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
# Without the stateful phase no generated call learns a real key id, so none revokes the run's own key.
schema = schemathesis.openapi.from_dict(_openapi(), config=CONFIG)


def test_the_served_document_is_the_one_tested(live_server: str) -> None:
    assert httpx.get(f"{live_server}/openapi.json").json() == _openapi()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case, live_server: str, api_key: str
) -> None:
    case.call_and_validate(
        base_url=live_server, headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS, timeout=60
    )
