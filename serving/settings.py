"""Runtime settings (where things live and which servers to talk to), from INFEROPS_* variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Embedded defaults: SQLite MLflow in the data dir, Prefect's ephemeral API, a local Ray."""

    model_config = SettingsConfigDict(env_prefix="INFEROPS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / ".inferops")
    mlflow_tracking_uri: str | None = None
    prefect_api_url: str | None = None
    ray_address: str | None = None
    api_keys: list[str] = Field(default_factory=list)
    api_keys_file: Path | None = None
    ingress: str = "auto"

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
