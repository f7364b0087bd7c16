"""Load the gateway's deployments from ``levant.toml`` (or a YAML file of the same shape).

```toml
[gateway]
region = "eu-west-paris"          # --region overrides it
allowed_regions = ["EU"]          # this gateway forwards only into these

[[regions]]                       # regions beyond the built-in ones
name = "eu-west-lyon"
jurisdictions = ["EU"]

[[deployments]]
name = "smollm2-paris"
model = "smollm2-135m-instruct"
backend = "local"                 # gets the gateway's region

[[deployments]]
name = "smollm2-us"
model = "smollm2-135m-instruct"
backend = "upstream"
region = "us-east"                # required for every non-local deployment
[deployments.upstream]
url = "https://us.example.net"
api_key_env = "LEVANT_US_KEY"

[[deployments]]
name = "smollm2-ray"
model = "smollm2-135m-instruct"
backend = "ray"                   # engine replicas on Ray Serve (levant deploy ray)
region = "eu-west-paris"
[deployments.upstream]
url = "http://10.0.0.5:8100"      # Serve's HTTP proxy, reached like an upstream
```

Every error names the file and the entry. Nothing here reads the environment:
API keys are resolved by ``upstream_keys`` from a mapping the caller passes.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from levant.routing.deployment import Deployment
from levant.routing.regions import (
    DEFAULT_REGIONS,
    PolicyError,
    RegionRegistry,
    ResidencyPolicy,
)


class RoutingConfigError(ValueError):
    """The deployments file is missing, malformed or inconsistent."""


class _Region(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    jurisdictions: list[str] = Field(min_length=1)


class _Gateway(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str | None = None
    allowed_regions: list[str] | None = None


@dataclass(frozen=True)
class RoutingConfig:
    region: str
    """The gateway's own region: the local engine's deployments run here."""
    regions: RegionRegistry
    gateway_policy: ResidencyPolicy
    """Where this gateway may send anything at all, whatever a workspace allows."""
    deployments: tuple[Deployment, ...]

    def for_model(self, model: str) -> list[Deployment]:
        return [d for d in self.deployments if d.model == model]


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutingConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise RoutingConfigError(f"{path}: not valid {path.suffix.lstrip('.')}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RoutingConfigError(f"{path}: expected a table at the top level")
    return data


def _errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def load_routing_config(path: Path, *, region: str | None = None) -> RoutingConfig:
    """Parse ``path``. ``region`` (``levant serve --region``) overrides ``[gateway] region``."""
    data = _read(path)
    unknown = sorted(set(data) - {"gateway", "regions", "deployments"})
    if unknown:
        raise RoutingConfigError(f"{path}: unknown section(s) {', '.join(unknown)}")
    return build_routing_config(data, source=str(path), region=region)


def build_routing_config(
    data: Mapping[str, Any], *, source: str = "<config>", region: str | None = None
) -> RoutingConfig:
    registry = DEFAULT_REGIONS.copy()
    for i, raw in enumerate(_list(data.get("regions"), source, "regions")):
        try:
            entry = _Region.model_validate(raw)
            registry.register(entry.name, entry.jurisdictions)
        except (ValidationError, PolicyError) as exc:
            detail = _errors(exc) if isinstance(exc, ValidationError) else str(exc)
            raise RoutingConfigError(f"{source}: regions[{i}]: {detail}") from exc

    try:
        gateway = _Gateway.model_validate(data.get("gateway") or {})
        gateway_policy = ResidencyPolicy.from_workspace(
            gateway.allowed_regions, "standard", registry
        )
    except (ValidationError, PolicyError) as exc:
        detail = _errors(exc) if isinstance(exc, ValidationError) else str(exc)
        raise RoutingConfigError(f"{source}: [gateway]: {detail}") from exc
    own_region = region or gateway.region or "local"

    deployments: list[Deployment] = []
    seen: set[str] = set()
    for i, raw in enumerate(_list(data.get("deployments"), source, "deployments")):
        name = raw.get("name") if isinstance(raw, dict) else None
        where = f"{source}: deployments[{i}]" + (f" ({name!r})" if name else "")
        if not isinstance(raw, dict):
            raise RoutingConfigError(f"{where}: expected a table")
        fields = dict(raw)
        if fields.get("backend") == "local":
            given = fields.get("region")
            if given is not None and given != own_region:
                raise RoutingConfigError(
                    f"{where}: a local deployment runs in the gateway's region "
                    f"{own_region!r}, not {given!r} (set --region or [gateway] region)"
                )
            fields["region"] = own_region
        elif "region" not in fields:
            raise RoutingConfigError(f'{where}: region is required (e.g. region = "eu-west-paris")')
        try:
            dep = Deployment.model_validate(fields)
        except ValidationError as exc:
            raise RoutingConfigError(f"{where}: {_errors(exc)}") from exc
        if dep.backend != "local" and dep.region not in registry:
            raise RoutingConfigError(
                f"{where}: unknown region {dep.region!r}; declare it under [[regions]] with "
                "its jurisdictions, or use one of: " + ", ".join(registry.names())
            )
        if dep.backend != "local" and not gateway_policy.allows(dep.region):
            raise RoutingConfigError(
                f"{where}: region {dep.region!r} is outside what this gateway may reach: "
                + gateway_policy.describe(subject="the [gateway] policy")
            )
        if dep.name in seen:
            raise RoutingConfigError(f"{where}: duplicate deployment name {dep.name!r}")
        seen.add(dep.name)
        deployments.append(dep)
    return RoutingConfig(own_region, registry, gateway_policy, tuple(deployments))


def _list(value: Any, source: str, key: str) -> Sequence[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RoutingConfigError(f"{source}: {key} must be a list of tables ([[{key}]])")
    return value


def upstream_keys(config: RoutingConfig, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each upstream deployment's API key, looked up in ``environ`` by its ``api_key_env``.

    A named variable that is unset is an error (a silent unauthenticated call
    would fail later and less clearly); the message names the variable, never a value.
    """
    keys: dict[str, str | None] = {}
    for dep in config.deployments:
        if dep.upstream is None:
            continue
        var = dep.upstream.api_key_env
        if var is None:
            keys[dep.name] = None
            continue
        value = environ.get(var)
        if not value:
            raise RoutingConfigError(
                f"deployment {dep.name!r}: environment variable {var} (its API key) is not set"
            )
        keys[dep.name] = value
    return keys
