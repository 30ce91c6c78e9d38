"""Settings, read once from GRADSERVE_* environment variables (pydantic-settings).

The defaults are for a real deployment on a small machine: a 100,000-node
graph and a 16M-element tensor pass; a graph that would need 40 GB or 1e13
FLOPs is refused from its shapes before anything is allocated.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 2**20
GiB = 2**30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="ignore", frozen=True)

    bind: str = Field("127.0.0.1:8000", description="host:port gunicorn listens on")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1,
                         description="gunicorn worker processes (the work is CPU-bound)")
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated bearer keys; empty serves without authentication")
    max_body_bytes: int = Field(256 * MiB, ge=1024, description="largest request body")
    max_nodes: int = Field(200_000, ge=1, description="most nodes in one graph")
    max_items: int = Field(
        100_000, ge=1, description="most inputs, outputs or grad.wrt ids in one request; "
        "counted before anything is validated")
    max_errors: int = Field(20, ge=1, description="validation errors reported in one answer")
    max_elements: int = Field(2**25, ge=1, description="most elements in any one tensor")
    max_total_bytes: int = Field(4 * GiB, ge=MiB,
                                 description="most bytes of tensors alive at once, per evaluation")
    max_flops: float = Field(5e11, gt=0, description="most estimated floating-point operations")
    max_response_bytes: int = Field(512 * MiB, ge=1024, description="largest response body")
    deadline_s: float = Field(30.0, gt=0, description="wall-clock limit of one evaluation")
    worker_memory_bytes: int = Field(
        10 * GiB, ge=0, description="address-space cap of each worker (RLIMIT_AS); 0 = none")
    max_queue: int = Field(
        16, ge=0, description="connections waiting for a worker before new ones get 429; 0 = off")
    plan_cache: int = Field(
        64, ge=0, description="plans each worker keeps for graphs sent again (new values, same "
        "structure); 0 = plan every request")
    plan_cache_bytes: int = Field(
        256 * MiB, ge=0, description="most memory those plans may hold, estimated, per worker")
    request_timeout_s: float = Field(
        60.0, gt=0, description="a request must arrive in full this long after its first byte "
        "(else 408), and an answer be taken by the client (else the connection is dropped); "
        "idle kept-alive connections close after 5 s")
    max_buffered_bytes: int = Field(
        512 * MiB, ge=MiB, description="request bytes one worker holds, arriving or waiting to "
        "be computed; past it, uploads get 429")
    drain_s: float = Field(0.0, ge=0,
                           description="after SIGTERM, keep serving with /readyz at 503 this long")
    log_level: str = Field("info", description="debug, info, warning or error")
    models_dir: str = Field(
        "", description="folder of model files NAME.json, loaded and checked at start "
        "(PROTOCOL.md §10); empty serves no models")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            return tuple(k.strip() for k in v.split(",") if k.strip())
        return v

    @property
    def loopback(self) -> bool:
        host = self.bind.rpartition(":")[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")

    def public_limits(self) -> dict:
        """What GET /v1 tells clients, so they can check sizes before sending."""
        return {
            "max_body_bytes": self.max_body_bytes,
            "max_nodes": self.max_nodes,
            "max_elements": self.max_elements,
            "max_total_bytes": self.max_total_bytes,
            "max_flops": self.max_flops,
            "max_response_bytes": self.max_response_bytes,
            "deadline_s": self.deadline_s,
        }
