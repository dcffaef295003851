"""The HTTP API's routes, written once: the FastAPI app declares them and the client calls them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Route:
    """An HTTP method, a path template with `{name}` for the model, and whether it needs an admin key."""

    method: str
    template: str
    admin: bool = False  # needs an admin key (changes or reads how the deployment serves)

    def path(self, name: str | None = None) -> str:
        """The path for one model; the name is percent-encoded so `onnx:/a/b.onnx` stays one path segment."""
        if "{name}" not in self.template:
            return self.template
        if not name:
            raise ValueError(f"route {self.template} needs a model name")
        return self.template.format(name=quote(name, safe=""))


LIVE = Route("GET", "/v2/health/live")
READY = Route("GET", "/v2/health/ready")
SERVER = Route("GET", "/v2")
MODEL = Route("GET", "/v2/models/{name}")
MODEL_READY = Route("GET", "/v2/models/{name}/ready")
INFER = Route("POST", "/v2/models/{name}/infer")
EMBEDDINGS = Route("POST", "/v1/embeddings")
SWITCH = Route("POST", "/admin/models/{name}/switch", admin=True)
SERVING = Route("PUT", "/admin/models/{name}/serving", admin=True)
SERVING_CONFIG = Route("GET", "/admin/models/{name}/serving", admin=True)
ROLLBACK = Route("POST", "/admin/models/{name}/rollback", admin=True)
DOCS = Route("GET", "/docs")
OPENAPI = Route("GET", "/openapi.json")
