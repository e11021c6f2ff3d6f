"""Noor's settings: one validated object, read from NOOR_* environment variables."""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from noor.scheduling import Policy


# The published figures Noor calibrates on (each row with its source) live in the repository, data/published;
# a source checkout has them, an installed wheel does not (then pass --data).
PUBLISHED_DIR = Path(__file__).resolve().parents[2] / "data" / "published"

REGION = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")  # e.g. me-riyadh (fits the 32-character column)


class RegionPlane(BaseModel):
    """A region's data plane: where a tenant bound to it keeps its rows (database_url) and files (assets_url)."""

    model_config = ConfigDict(extra="forbid")

    database_url: str | None = Field(None, min_length=1, description="SQLAlchemy URL of the region's database")
    assets_url: str | None = Field(None, min_length=1, description="fsspec URL of the region's asset store")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "noor"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOOR_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir, description="where Noor keeps its files")
    default_model: str = Field("tiny", description="the model used when a request names none")
    tiny_weights: Path | None = Field(None, description="noor-tiny weights dir; default: the ones in the package")
    world_tiny_weights: Path | None = Field(
        None, description="noor-world-tiny weights dir; default: the ones in the package"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's choice")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in the data dir")
    assets_url: str | None = Field(None, description="fsspec URL for asset files; default: a folder in the data dir")
    host: str = Field("127.0.0.1", description="where `noor serve` listens")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=0, le=64, description="local worker processes started by `noor serve`")
    public_url: str | None = Field(None, description="how clients reach this server (links in webhooks)")
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description='Dream Machine/OpenAI model names -> Noor model ids, JSON, e.g. {"ray-2": "wan2.1-t2v-14b"}; '
        "merged over the defaults (every alias maps to tiny)",
    )
    worker_chip: str = Field("cpu-local", description="catalog chip the workers run on: prices and ETAs use it")
    price_markup: float = Field(1.0, ge=0, description="price = predicted cost at the chip's $/hour x this")
    log_format: Literal["json", "text"] = Field("json", description="`noor serve` logs: JSON lines or plain text")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    scheduler: str = Field(
        "priority", description="queue order workers claim in: priority, fifo, sjf, fair-share (noor.scheduling)"
    )
    scheduler_settings: dict[str, Any] = Field(
        default_factory=dict, description='the policy\'s settings, JSON, e.g. {"aging_per_s": 0.01} for sjf'
    )
    ssrf_allow: list[str] = Field(
        default_factory=list, description="networks callbacks may reach despite being private, e.g. 10.0.0.0/8"
    )
    regions: dict[str, RegionPlane] = Field(
        default_factory=dict,
        description="each region's data plane, JSON, e.g. "
        '{"me-riyadh": {"database_url": "postgresql://db.riyadh/noor", "assets_url": "s3://noor-riyadh/assets"}}: '
        "a tenant bound to a region with a database keeps its generations, prompts, uploads, outputs and webhook "
        "outbox there only; a region without an assets_url keeps its files in a folder of the data dir",
    )
    regions_file: Path | None = Field(
        None, description="the regions as a TOML file, a table each ([me-riyadh] database_url = ...), instead of JSON"
    )

    @field_validator("regions")
    @classmethod
    def _region_names(cls, regions: dict[str, RegionPlane]) -> dict[str, RegionPlane]:
        for region in regions:
            if not REGION.match(region):
                raise ValueError(f"region names are lowercase letters, digits and - ({region!r} is not)")
        return regions

    @model_validator(mode="after")
    def _regions_from_file(self) -> Settings:
        if self.regions_file is None:
            return self
        if self.regions:
            raise ValueError("NOOR_REGIONS and NOOR_REGIONS_FILE: set one, not both")
        try:
            table = tomllib.loads(self.regions_file.read_text())
        except OSError as err:
            raise ValueError(f"NOOR_REGIONS_FILE: cannot read {str(self.regions_file)!r}: {err.strerror}") from err
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"NOOR_REGIONS_FILE: {str(self.regions_file)!r} is not TOML: {err}") from err
        self.regions = self._region_names({name: RegionPlane.model_validate(plane) for name, plane in table.items()})
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'noor.db'}"

    @property
    def resolved_assets_url(self) -> str:
        return self.assets_url or str(self.data_dir / "assets")

    def region_assets_url(self, region: str | None) -> str:
        """Where a region's workers write files (data residency); no region: the default store."""
        if region is None:
            return self.resolved_assets_url
        plane = self.regions.get(region)
        if plane is not None and plane.assets_url:
            return plane.assets_url
        if not REGION.match(region):
            raise ValueError(f"region must be lowercase letters, digits and -, got {region!r}")
        return str(self.data_dir / "regions" / region / "assets")

    def region_database_url(self, region: str | None) -> str | None:
        """The database of a region's data plane; None: the region keeps its rows in the central database."""
        plane = self.regions.get(region) if region is not None else None
        return plane.database_url if plane is not None else None

    def scheduling_policy(self) -> Policy:
        """The configured queue-order policy (NOOR_SCHEDULER, NOOR_SCHEDULER_SETTINGS); SchedulingError if unknown."""
        from noor import scheduling

        return scheduling.get(self.scheduler, **self.scheduler_settings)

    def secret(self) -> bytes:
        """The key that signs asset links: made once, kept in the data dir (mode 600)."""
        path = self.data_dir / "secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    # --- world sessions (noor.runtime.interactive; docs/serve.md) ---
    world_slots: int = Field(1, ge=1, le=256, description="world sessions `noor serve` runs at once (one thread each)")
    world_queue: int = Field(4, ge=0, le=10_000, description="world sessions that may wait for a slot; more: 429")
    world_idle_s: float = Field(
        60.0, gt=0, le=86_400, description="a world session with no socket and no message for this long ends"
    )
    region: str | None = Field(
        None,
        description="this host's region: its local workers and world sessions run there (a bound tenant's work "
        "runs only in its regions); none: only unbound tenants' work",
    )

    world_host: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="this server's name as a session host (sessions it holds, its heartbeat); none: the machine's "
        "name. Stable across restarts, so a restarted server ends its last run's sessions at once; give each of "
        "several servers on one machine that share a database its own",
    )

    # --- provenance (noor.trust; docs/trust.md): per deployment, never per request ---
    provenance: bool = Field(True, description="sign every MP4, PNG and JPEG written with a C2PA manifest")
    watermark: bool = Field(True, description="mark every output's pixels with the invisible watermark")
    signing_cert: Path | None = Field(
        None, description="PEM chain (signer first) that signs manifests; default: one made in the data dir"
    )
    signing_key: Path | None = Field(
        None, validate_default=True, description="the PEM private key of NOOR_SIGNING_CERT (both or neither)"
    )
    signing_trust: Path | None = Field(None, description="PEM CAs `noor verify` trusts besides the deployment's own")

    @field_validator("signing_key")
    @classmethod
    def _signing_pair(cls, key: Path | None, info: ValidationInfo) -> Path | None:
        if (info.data.get("signing_cert") is None) != (key is None):
            raise ValueError("NOOR_SIGNING_CERT and NOOR_SIGNING_KEY are set together or not at all")
        return key

    @field_validator("region")
    @classmethod
    def _host_region_name(cls, region: str | None) -> str | None:
        if region is not None and not REGION.match(region):
            raise ValueError(f"region names are lowercase letters, digits and - ({region!r} is not)")
        return region

    # --- moderation (noor.trust.moderation; docs/trust.md) ---
    moderation_policy_dir: Path | None = Field(
        None, description="tenants' moderation policy files, <tenant>.toml each, read at start"
    )
    moderation_classifier_url: str | None = Field(
        None, description="an external classifier that also judges prompts and output frames (HTTP POST JSON)"
    )
    moderation_classifier_timeout_s: float = Field(5.0, gt=0, le=120)
    moderation_fail_open: bool = Field(
        False, description="let work through when the classifier cannot answer (default: refuse it)"
    )


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
