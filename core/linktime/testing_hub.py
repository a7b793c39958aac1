"""The hub of the ``linktime_hub`` fixture: a real ``Hub`` that also saves workflows through
the HTTP API, as a user's client does, so a plugin's tests check what a save accepts or refuses
(the API's answer, field paths included) without the core's internals. Kept out of
``linktime.testing`` so that merely having pytest load the fixtures imports no engine."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
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


class LinktimeServer:
    """A ``LinktimeHub`` served over HTTP on loopback (uvicorn in a thread), for tests that
    post to it as a provider or a client would: ``connect`` a booking source as an account,
    ``post_signed`` a provider's payload to its inbound URL, signed as the provider signs it,
    and read what it became with ``get`` (the API, as the account)."""

    def __init__(self, hub: LinktimeHub, url: str, api_key: str) -> None:
        import httpx

        self.hub, self.url, self.api_key = hub, url, api_key
        self.http = httpx.Client(
            base_url=url,
            trust_env=False,
            timeout=10,
            headers={"Authorization": f"Bearer {api_key}"},
        )

    def get(self, path: str) -> Any:
        """``GET path`` as the account; the answer's JSON (a non-200 fails the test)."""
        response = self.http.get(path)
        if response.status_code != 200:
            raise AssertionError(f"GET {path} answered {response.status_code}: {response.text}")
        return response.json()

    def connect(self, source: str, **settings: Any) -> dict[str, Any]:
        """Connect ``source`` with ``settings`` (none: the secret is generated); the answer,
        its secret in clear (shown once), with the settings to sign with under ``clear``."""
        response = self.http.post("/v1/sources", json={"type": source, "settings": settings})
        if response.status_code != 201:
            raise AssertionError(
                f"connecting {source} answered {response.status_code}: {response.text}"
            )
        answer: dict[str, Any] = response.json()
        return answer

    def post_signed(
        self,
        connection: dict[str, Any],
        payload: dict[str, Any] | bytes,
        *,
        now: datetime | None = None,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Post ``payload`` (JSON, or the exact bytes) to ``connection``'s inbound URL, with the
        headers its source's ``sign`` makes with the connection's secret (or ``secret``) at
        ``now`` (the hub's clock by default); ``headers`` replace or add some (a forgery)."""
        source = self.hub.registry.sources[connection["type"]]
        field = source.secret_field
        settings = dict(connection["settings"])
        settings[field] = secret if secret is not None else settings[field]
        opened = source.settings.model_validate(settings)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signed = source.sign(body, opened, now or self.hub.clock())
        sent = {"Content-Type": "application/json", **signed, **(headers or {})}
        request = self.http.build_request(
            "POST", connection["url"].removeprefix(self.url), content=body, headers=sent
        )
        del request.headers["authorization"]  # no API key: the signature authenticates it
        return self.http.send(request)


@contextlib.contextmanager
def serve(hub: LinktimeHub) -> Iterator[LinktimeServer]:
    """``hub`` served on a free loopback port (its public URL set to it), with a business
    account; stopped afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    from .api import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    hub.settings.public_url = url
    config = uvicorn.Config(create_app(hub), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the LinkTime server did not start")
        time.sleep(0.02)
    served = LinktimeServer(hub, url, create_account(hub, "Test account", "business").api_key)
    try:
        yield served
    finally:
        served.http.close()
        server.should_exit = True
        thread.join(timeout=15)
