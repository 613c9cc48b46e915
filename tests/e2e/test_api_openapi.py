"""The HTTP API's OpenAPI description: valid OpenAPI 3.1, the routes exactly, served as built,
and the running API fuzzed from it (schemathesis: positive and negative bodies): no 500, no answer
the description does not allow."""

from __future__ import annotations

from collections.abc import Iterator

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.definitions import OPENAPI_31

from gateway.api.openapi import SPEC
from gateway.api.routes import ROUTES
from harness.api_client import API_KEY, call
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer

SCHEMA = schemathesis.openapi.from_dict(SPEC)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Gateway]:
    # A small payload limit, so that generated data meets it too.
    with running_gateway(
        redis_server.url, workers=1, WEBSOCKET_API_KEYS=API_KEY, WEBSOCKET_MAX_PAYLOAD_SIZE="1024"
    ) as gateway:
        yield gateway


def test_the_description_is_valid_openapi_3_1() -> None:
    jsonschema.Draft202012Validator(OPENAPI_31).validate(SPEC)
    for schema in SPEC["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    SCHEMA.validate()


def test_the_description_names_exactly_the_routes() -> None:
    described = {(path, method.upper()) for path, item in SPEC["paths"].items() for method in item}
    assert described == {(path, route.method) for path, route in ROUTES.items()}


def test_the_api_serves_the_description_to_a_key_holder_only(api: Gateway) -> None:
    answer = call(api.port, "/api/openapi.json", method="GET")
    assert (answer.status, answer.json()) == (200, SPEC)
    assert call(api.port, "/api/openapi.json", method="GET", key=None).status == 401


@SCHEMA.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_get_only_described_answers(case: schemathesis.Case, api: Gateway) -> None:
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{api.port}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        checks=CHECKS,
        timeout=10,
    )
