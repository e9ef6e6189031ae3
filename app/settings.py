"""Service configuration, read from the environment (and an optional `.env` file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.db.group_commit import MAX_GROUP

DEFAULT_DATA_DIR = Path("data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses settings that are only safe on a developer's machine.",
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, description="Local data folder (SQLite, keys)."
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means the embedded SQLite file under data_dir.",
    )
    migrate_on_start: bool = Field(
        default=True,
        description="Apply migrations on start when the database is SQLite (the embedded "
        "default). PostgreSQL is always migrated as its own step (`alembic upgrade head`).",
    )
    auth_disabled: bool = Field(
        default=False,
        description="Development only: serve without API keys (a warning is logged on start).",
    )
    scores_open: bool = Field(
        default=False, description="Let stateless scoring endpoints be called without a key."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    public_base_url: str = Field(
        default="",
        pattern=r"^(https?://[^/?#\s]+(/[^?#\s]*)?)?$",
        description="The service's address as clients reach it (e.g. "
        "`https://pasi.example.org`), for the absolute links FHIR answers carry (`fullUrl`, "
        "`self`, `next`, the CapabilityStatement's `url`). Empty: taken from each request's "
        "Host header, which a proxy or a forged header can change; set it in production.",
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    default_page_size: int = Field(default=50, ge=1)
    max_page_size: int = Field(default=200, ge=1)
    idempotency_retention_hours: int = Field(
        default=48, ge=24, description="Idempotency keys are kept at least this long (min 24)."
    )
    idempotency_lease_seconds: int = Field(
        default=60,
        ge=1,
        description="An in-flight idempotency claim older than this is treated as abandoned "
        "(its request died) and may be taken over by a retry.",
    )
    idempotency_purge_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often each worker deletes idempotency keys older than their retention.",
    )
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long a worker trusts a key it has verified. A revoked key stops at once "
        "on the worker that revoked it and within this many seconds on every other; 0 checks "
        "the database on every request.",
    )
    sqlite_group_commit_max: int = Field(
        default=MAX_GROUP,
        ge=1,
        le=1000,
        description="SQLite: at most this many queued write transactions commit together (one "
        "fsync), each still all-or-nothing on its own; 1 commits each alone.",
    )
    postgres_group_commit_max: int = Field(
        default=MAX_GROUP,
        ge=0,
        # A group's members keep their savepoints until it commits, and PostgreSQL keeps at
        # most 64 subtransactions of a transaction in its shared cache.
        le=64,
        description="PostgreSQL: a worker's queued write transactions share one transaction "
        "(one audit-chain lock, one commit), at most this many, each still all-or-nothing on "
        "its own; 0 commits each transaction on its own (each still takes the audit-chain "
        "lock first).",
    )
    outcomes_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Per worker: outcomes answers kept, keyed by each patient's revision (the "
        "count and version sum of their records, read on every request), up to this many bytes "
        "in all; 0 turns the cache off.",
    )
    gc_freeze: bool = Field(
        default=True,
        description="After start-up, collect once and move every object then alive (modules, "
        "the app, its routes and schemas) to the collector's permanent generation "
        "(`gc.freeze()`), so later collections stop re-scanning them. Measured in "
        "`bench/load.py` (its GC_FREEZE=false diagnostic).",
    )
    failed_auth_per_minute: int = Field(
        default=60,
        ge=0,
        description="Failed authentications per minute per client address and worker before "
        "429; 0 = off.",
    )
    rate_limit_per_minute: int = Field(
        default=6000, ge=0, description="Requests per minute per API key and worker; 0 = off."
    )

    # Connection limits, enforced by the run command's HTTP protocol (app/server.py,
    # docs/decisions/0007-connection-limits.md); uvicorn's flags set keep-alive and concurrency.
    http_max_header_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="The request line and headers together may be at most this long (431).",
    )
    http_header_timeout_seconds: float = Field(
        default=10,
        gt=0,
        description="A request head must be complete this long after the connection opens (or, "
        "kept alive, after its first byte); else 408, or a silent close if nothing came.",
    )
    http_body_timeout_seconds: float = Field(
        default=30,
        gt=0,
        description="A request body must be complete this long after its head (else 408).",
    )

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        if self.environment == "production" and self.auth_disabled:
            raise ValueError("AUTH_DISABLED cannot be set when ENVIRONMENT=production")
        return self

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'psoriasis.db').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
