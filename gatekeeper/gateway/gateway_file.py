"""The gateway file: per agent, a `live` and a `twin` upstream MCP server (SPEC §9).

```yaml
agents:
  support-bot:
    live: {url: "https://tools.internal/mcp", headers: {Authorization: "Bearer ${TOOLS_TOKEN}"}}
    twin: {command: python3, args: [twin_tools.py], env: {API_KEY: {env: TWIN_API_KEY}}}
timeout: 30s            # an upstream call slower than this becomes a tool error
```

Secrets never sit in the file: a header or environment value is either a string whose every
`${VAR}` is filled from the gateway's environment, or `{env: VAR}`. A literal that looks like a
credential (a header named Authorization, or a value with no `${...}` under a key naming a
token, key, secret or password) is refused when the file is read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gatekeeper.gateway.deciding import ConfigError, parse_duration

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_NAME = re.compile(r"(authorization|token|secret|password|key|credential)", re.IGNORECASE)


class EnvRef(BaseModel):
    """A value read from one environment variable of the gateway process."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


Value = str | EnvRef


def _check_secrets(values: Mapping[str, Value], what: str) -> None:
    for name, value in values.items():
        if isinstance(value, str) and _SECRET_NAME.search(name) and not _REFERENCE.search(value):
            raise ValueError(f"{what} {name!r} holds a literal secret: write ${{VAR}} or {{env: VAR}} instead")


class Upstream(BaseModel):
    """One upstream MCP server: a command to launch (stdio) or a streamable HTTP URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    command: str | None = None
    args: list[str] = []
    env: dict[str, Value] = {}
    cwd: str | None = None
    url: Annotated[str | None, Field(pattern=r"^https?://")] = None
    headers: dict[str, Value] = {}

    @model_validator(mode="after")
    def _one_transport(self) -> Upstream:
        if (self.command is None) == (self.url is None):
            raise ValueError("name exactly one of command (stdio) or url (streamable HTTP)")
        if self.url is None and self.headers:
            raise ValueError("headers go with url; a command takes env")
        _check_secrets(self.headers, "header")
        _check_secrets(self.env, "environment variable")
        return self

    def resolved_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Return the upstream's environment with every reference filled in."""
        return {name: resolve(value, environ) for name, value in self.env.items()}

    def resolved_headers(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Return the upstream's HTTP headers with every reference filled in."""
        return {name: resolve(value, environ) for name, value in self.headers.items()}

    def describe(self) -> str:
        """Return a short, secret-free description for logs and errors."""
        return self.url or " ".join([self.command or "", *self.args])


class AgentUpstreams(BaseModel):
    """An agent's tools: the live upstream, and the twin that twin sessions reach instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    live: Upstream
    twin: Upstream


class GatewayFile(BaseModel):
    """The whole gateway file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agents: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")], AgentUpstreams]
    timeout: float = 30.0

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_duration(value)
        return value

    def check_environment(self, environ: Mapping[str, str]) -> None:
        """Fail at start, not at the first call, when a referenced variable is unset."""
        for agent, upstreams in self.agents.items():
            for env_name, upstream in (("live", upstreams.live), ("twin", upstreams.twin)):
                try:
                    upstream.resolved_env(environ)
                    upstream.resolved_headers(environ)
                except ConfigError as exc:
                    raise ConfigError(f"agents.{agent}.{env_name}: {exc.message}") from None


def resolve(value: Value, environ: Mapping[str, str]) -> str:
    """Fill one value from the environment: `{env: VAR}` or every `${VAR}` in a string."""
    if isinstance(value, EnvRef):
        if value.env not in environ:
            raise ConfigError(f"environment variable {value.env} is not set")
        return environ[value.env]

    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in environ:
            raise ConfigError(f"environment variable {match.group(1)} is not set")
        return environ[match.group(1)]

    return _REFERENCE.sub(fill, value)


def load_gateway_file(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> GatewayFile:
    """Read and validate a gateway file; ConfigError names the field of the first problems."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        found = GatewayFile.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    try:
        found.check_environment(os.environ if environ is None else environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from None
    return found
