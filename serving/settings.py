"""Runtime settings (where things live and which servers to talk to), from INFEROPS_* variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def split_keys(value: Any) -> list[str]:
    """`key1,key2` (what people type into an environment variable), a JSON list, or a list: the keys in it."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                parsed = json.loads(text)
            except ValueError:
                raise ValueError(
                    "a key list that starts with '[' must be a JSON list of strings; or write the keys "
                    "comma-separated: key1,key2"
                ) from None
            return split_keys(parsed)
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, list | tuple | set):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError(f"keys must be a comma-separated string or a list, got {type(value).__name__}")


class Settings(BaseSettings):
    """Embedded defaults: SQLite MLflow in the data dir, Prefect's ephemeral API, a local Ray."""

    model_config = SettingsConfigDict(env_prefix="INFEROPS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / ".inferops")
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    ray_address: str | None = None
    # Comma-separated (`INFEROPS_API_KEYS=key1,key2`), as people type it; a JSON list works too. The server
    # accepts these keys and the client calls with the first, so one variable configures both ends.
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    api_keys_file: Path | None = None
    # Admin routes (switch, rollback, serving knobs) take only these: an inference key cannot change production.
    admin_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    admin_keys_file: Path | None = None
    # Development only: inference routes answer requests with no key when no inference key is configured.
    allow_anonymous: bool = False
    ingress: str = "auto"

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> list[str]:
        return split_keys(value)

    def resolved_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def models_dir(self) -> Path:
        path = self.data_dir / "models"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def artifacts_dir(self) -> Path:
        path = self.data_dir / "mlartifacts"
        path.mkdir(parents=True, exist_ok=True)
        return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
