"""The hub of the ``linktime_hub`` fixture: a real ``Hub`` that also saves workflows through
the HTTP API, as a user's client does, so a plugin's tests check what a save accepts or refuses
(the API's answer, field paths included) without the core's internals. Kept out of
``linktime.testing`` so that merely having pytest load the fixtures imports no engine."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from .accounts import create_account
from .engine import Hub

if TYPE_CHECKING:
    import httpx
    from litestar.testing import TestClient

    from .settings import Settings


class LinktimeHub(Hub):
    """A ``Hub`` with ``save`` and ``refused``: each posts a workflow to ``POST /v1/workflows``
    as an account on ``plan`` (one account per plan, created on first use)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._keys: dict[str, str] = {}
        self._exits = contextlib.ExitStack()
        self._client: TestClient[Any] | None = None

    def save(self, workflow: dict[str, Any], *, plan: str = "business") -> dict[str, Any]:
        """Save ``workflow`` (``name`` may be left out) and return it as the API answers; a
        refusal fails the test, showing the answer."""
        response = self._post(workflow, plan)
        if response.status_code != 201:
            raise AssertionError(f"the save answered {response.status_code}: {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    def refused(
        self, workflow: dict[str, Any], *, plan: str = "business", status: int = 422
    ) -> dict[str, str]:
        """Save ``workflow``, which must be refused with ``status`` (422: invalid; 403: the plan
        does not allow it), and return each field at fault with its message, e.g.
        ``{"steps.0.settings.url": "…"}``."""
        response = self._post(workflow, plan)
        if response.status_code != status:
            raise AssertionError(
                f"expected a {status} refusal; the save answered {response.status_code}: "
                f"{response.text}"
            )
        return {f["field"]: f["message"] for f in response.json()["fields"]}

    def _post(self, workflow: dict[str, Any], plan: str) -> httpx.Response:
        if self._client is None:
            from litestar.testing import TestClient

            from .api import create_app

            self._client = self._exits.enter_context(TestClient(create_app(self)))
        if plan not in self._keys:
            self._keys[plan] = create_account(self, f"Test account ({plan})", plan).api_key
        return self._client.post(
            "/v1/workflows",
            json={"name": "Test workflow", **workflow},
            headers={"Authorization": f"Bearer {self._keys[plan]}"},
        )

    def close(self) -> None:
        self._exits.close()
        super().close()
