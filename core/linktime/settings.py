"""Operator settings: environment (``LINKTIME_*``) over an optional ``linktime.toml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from .plans import DEFAULT_PLANS, PlanConfig

DEFAULT_RETRY_SCHEDULE = [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LINKTIME_", extra="ignore")

    data_dir: Path = Field(Path(".linktime"), description="Where the embedded default keeps data")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; SQLite in data_dir if unset"
    )
    redis_url: str | None = Field(None, description="Redis broker; in-process broker if unset")
    broker_namespace: str = "linktime"
    secret_key: str | None = Field(
        None, description="Encrypts integration secrets; generated in data_dir if unset"
    )
    load_plugins: str | None = Field(
        None, description="Comma-separated entry-point names to load; empty loads none"
    )
    retry_schedule: list[float] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        description="Seconds to wait before each retry; its length is the number of retries",
    )
    step_lease_seconds: float = Field(
        60.0, gt=0, description="How long a worker owns a run before it counts as lost"
    )
    requeue_after_seconds: float = Field(
        30.0, gt=0, description="How long a queued run may wait for a worker before it is re-sent"
    )
    scheduler_interval: float = Field(0.5, gt=0)
    scheduler_batch: int = Field(1000, gt=0)
    max_event_bytes: int = Field(256 * 1024, gt=0)
    response_excerpt_bytes: int = Field(1024, ge=0)
    worker_threads: int = Field(8, gt=0)
    worker_timeout_ms: int = Field(
        100,
        gt=0,
        description="The longest a worker's poll of an empty queue sleeps (Dramatiq's "
        "worker_timeout; its own default, 1,000 ms, is how late the first run after a lull "
        "may start)",
    )
    plans: dict[str, PlanConfig] = Field(
        # copies: a hub's plans changed in place never reach another hub's
        default_factory=lambda: {k: v.model_copy(deep=True) for k, v in DEFAULT_PLANS.items()},
        description="Plan tiers by name; linktime.toml [plans.NAME] tables replace the defaults",
    )
    disabled_plugins: list[str] = Field(
        default_factory=list, description="Entry-point names never loaded, whatever the plan"
    )
    owns_database: bool = Field(
        False,
        description="PostgreSQL without Redis: `serve` is the database's only worker, so at "
        "start it takes back the runs it left under way (always so on SQLite)",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the operator API under /v1/admin; unset: that API is off "
        "(every route answers 404)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: one JSON object per log line, with the run's ids"
    )
    metrics_dir: Path | None = Field(
        None,
        description="Prometheus multiprocess directory shared by the `linktime` processes of "
        "one machine; `serve`'s /metrics adds them up. Unset: each process counts alone",
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="`linktime worker` and `linktime scheduler` serve their own /metrics on this "
        "port (a worker's processes added up), for machines without `serve`",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="The address LINKTIME_METRICS_PORT listens on; it takes no token, so only "
        "loopback unless the operator sets another (0.0.0.0: every interface)",
    )
    public_url: str | None = Field(
        None,
        description="The address the world reaches this server at, e.g. https://hub.example.com: "
        "the base of the URLs handed to providers (delivery callbacks, unsubscribe links). "
        "Unset: no callbacks are asked for and delivery stays `accepted`",
    )
    prefer_plugins: dict[str, str] = Field(
        default_factory=dict,
        description="For a name (action, trigger, template) two plugins claim: the distribution "
        "(or entry point) whose claim is used; the other claims are dropped",
    )

    def plan(self, name: str) -> PlanConfig:
        """An unknown plan (removed from the operator file) allows nothing: no workflow, no
        action that needs a capability, no credits."""
        return self.plans.get(name) or PlanConfig(active_workflows=0, sms_credits=0)

    @field_validator("admin_token")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        # LINKTIME_ADMIN_TOKEN= (blank) must not turn on a token anyone matches by sending none.
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        parts = urlsplit(value)
        # Providers append a path to it and sign what they call: no query, fragment or
        # credentials (they would be printed in the start banner), nothing a URL cannot hold.
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not carry a user or password (it is handed to providers)")
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or any(c.isspace() for c in value)
            or "?" in value
            or "#" in value
        ):
            raise ValueError(
                "expected the server's base URL like https://hub.example.com (http or https, a "
                f"host, an optional port and path; no query or fragment), got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("retry_schedule")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("retry delays must not be negative")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("LINKTIME_CONFIG", "linktime.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config))
        return tuple(sources)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'linktime.db').resolve()}"
