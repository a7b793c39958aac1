"""The condition fields: /v1/conditions/fields."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.handlers import HTTPRouteHandler
from pydantic import BaseModel

from .. import conditions
from ..conditions import FieldInfo


class FieldCatalogue(BaseModel):
    fields: list[FieldInfo]


def handlers() -> list[HTTPRouteHandler]:
    @get(
        "/v1/conditions/fields",
        summary="Every field a condition may name, with its type, operators and an example",
        description='A condition is `{"field": …, "op": …, "value": …}`; a list of them '
        'must all hold, `{"any": […]}` needs one, `{"all": […]}` all. Fields of type '
        "`custom` are named `custom.<key>`, a key of the booking's custom fields.",
    )
    async def condition_fields(account_id: NamedDependency[str]) -> FieldCatalogue:
        # account_id: the route answers only with an API key, like every /v1 route
        return FieldCatalogue(fields=conditions.catalogue())

    return [condition_fields]
