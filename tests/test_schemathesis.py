"""Fuzz the JSON API from its own OpenAPI document: no 5xx, and every answer matches the schema
it declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from linktime.api import create_app
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from .conftest import System


def test_api_never_errors_and_keeps_its_schema(make_system: Callable[..., System]) -> None:
    system = make_system()
    headers = {"Authorization": f"Bearer {system.account('business').api_key}"}
    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", create_app(system.hub))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    statuses: dict[int, int] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            response = case.call_and_validate(
                headers=headers, checks=[not_a_server_error, response_schema_conformance]
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        fuzz()
    # the fuzzing reached past authentication and validation into real work
    assert statuses.keys() & {200, 201, 202}, statuses
