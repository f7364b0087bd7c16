"""Regions, the jurisdictions they belong to, and a workspace's residency policy.

A region is a place a deployment runs (``eu-west-paris``); a jurisdiction is the
legal area it sits in (``EU``, ``EEA``, ``CH``, ``UK``, ``US``). Every EU region
is also EEA. A region nobody classified belongs to no jurisdiction, so only a
policy that names it, or one with no restriction, allows it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Retention = Literal["standard", "zero"]

JURISDICTIONS: Mapping[str, str] = {
    "EU": "European Union",
    "EEA": "European Economic Area",
    "CH": "Switzerland",
    "UK": "United Kingdom",
    "US": "United States",
    "CA": "Canada",
    "JP": "Japan",
}

# What membership implies: a region in the EU is also in the EEA.
_IMPLIED: Mapping[str, frozenset[str]] = {"EU": frozenset({"EEA"})}

_REGION_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

BUILTIN_REGIONS: Mapping[str, tuple[str, ...]] = {
    "eu-west-paris": ("EU",),
    "eu-central-frankfurt": ("EU",),
    "eu-west-amsterdam": ("EU",),
    "eu-west-dublin": ("EU",),
    "eu-north-stockholm": ("EU",),
    "eu-south-milan": ("EU",),
    "eea-north-oslo": ("EEA",),
    "ch-zurich": ("CH",),
    "uk-south-london": ("UK",),
    "us-east": ("US",),
    "us-west": ("US",),
    "ca-central-montreal": ("CA",),
    "jp-east-tokyo": ("JP",),
}


class PolicyError(ValueError):
    """A policy or region definition that cannot be understood."""


def is_region_name(name: str) -> bool:
    return bool(_REGION_NAME.match(name))


def _closure(jurisdictions: Iterable[str]) -> frozenset[str]:
    out = set(jurisdictions)
    for j in list(out):
        out |= _IMPLIED.get(j, frozenset())
    return frozenset(out)


class RegionRegistry:
    """Region name -> the jurisdictions it belongs to (implied ones included)."""

    def __init__(self, regions: Mapping[str, Iterable[str]] = BUILTIN_REGIONS) -> None:
        self._regions: dict[str, frozenset[str]] = {}
        for name, jurisdictions in regions.items():
            self.register(name, jurisdictions)

    def register(self, name: str, jurisdictions: Iterable[str]) -> None:
        if not is_region_name(name):
            raise PolicyError(f"invalid region name {name!r} (lowercase words joined by '-')")
        js = frozenset(jurisdictions)
        unknown = sorted(js - JURISDICTIONS.keys())
        if unknown:
            raise PolicyError(
                f"region {name!r}: unknown jurisdiction(s) {', '.join(unknown)}; "
                f"known: {', '.join(JURISDICTIONS)}"
            )
        self._regions[name] = _closure(js)

    def __contains__(self, name: object) -> bool:
        return name in self._regions

    def names(self) -> list[str]:
        return list(self._regions)

    def jurisdictions(self, region: str) -> frozenset[str]:
        """Empty for a region nobody classified."""
        return self._regions.get(region, frozenset())

    def copy(self) -> RegionRegistry:
        new = RegionRegistry({})
        new._regions = dict(self._regions)
        return new


DEFAULT_REGIONS = RegionRegistry()


@dataclass(frozen=True)
class ResidencyPolicy:
    """Where a workspace's requests may be served, and whether text may be retained.

    ``None`` for both ``allowed_regions`` and ``allowed_jurisdictions`` means no
    restriction. Otherwise a region is allowed when it is named, or when it
    belongs to a named jurisdiction; an empty set of both allows nothing.
    """

    allowed_regions: frozenset[str] | None = None
    allowed_jurisdictions: frozenset[str] | None = None
    retention: Retention = "standard"
    regions: RegionRegistry = field(default=DEFAULT_REGIONS, compare=False, repr=False)

    @property
    def unrestricted(self) -> bool:
        return self.allowed_regions is None and self.allowed_jurisdictions is None

    def allows(self, region: str) -> bool:
        if self.unrestricted:
            return True
        if self.allowed_regions and region in self.allowed_regions:
            return True
        js = self.allowed_jurisdictions
        return bool(js and js & self.regions.jurisdictions(region))

    def allows_retention(self, zero_retention: bool) -> bool:
        """A zero-retention workspace may only use deployments that retain nothing."""
        return self.retention == "standard" or zero_retention

    def describe(
        self, regions: Iterable[str] | None = None, *, subject: str = "workspace policy"
    ) -> str:
        """One sentence naming the policy, e.g. for an error message.

        ``regions`` are the regions worth listing as examples (say, those some
        deployment runs in); by default every known region the policy allows.
        """
        zero = " with zero retention" if self.retention == "zero" else ""
        if self.unrestricted:
            return f"{subject} allows any region{zero}"
        js = sorted(self.allowed_jurisdictions or ())
        rs = sorted(self.allowed_regions or ())
        parts: list[str] = []
        if js:
            parts.append(" or ".join(js) + " regions")
        if rs:
            parts.append(("region " if len(rs) == 1 else "regions ") + ", ".join(rs))
        if not parts:
            return f"{subject} allows no region{zero}"
        text = f"{subject} allows only " + " and ".join(parts)
        if js:
            pool = self.regions.names() if regions is None else list(dict.fromkeys(regions))
            examples = [r for r in pool if r not in rs and self.allows(r)]
            if examples:
                text += f" ({', '.join(examples)})"
        return text + zero

    @classmethod
    def from_workspace(
        cls,
        allowed_regions: Iterable[str] | None,
        retention: str = "standard",
        regions: RegionRegistry = DEFAULT_REGIONS,
    ) -> ResidencyPolicy:
        """Parse a workspace's ``allowed_regions`` JSON: region and/or jurisdiction names.

        ``None`` means any region. Jurisdictions are matched case-insensitively
        (``"EU"``, ``"eu"``); anything else must be a well-formed region name.
        """
        if retention not in ("standard", "zero"):
            raise PolicyError(f"unknown retention mode {retention!r} (standard | zero)")
        mode: Retention = "zero" if retention == "zero" else "standard"
        if allowed_regions is None:
            return cls(None, None, mode, regions)
        if isinstance(allowed_regions, str):
            raise PolicyError("allowed_regions must be a list of names, not a string")
        names: set[str] = set()
        jurisdictions: set[str] = set()
        for entry in allowed_regions:
            if not isinstance(entry, str) or not entry.strip():
                raise PolicyError(f"allowed_regions: {entry!r} is not a region or jurisdiction")
            value = entry.strip()
            if value.upper() in JURISDICTIONS:
                jurisdictions.add(value.upper())
            elif is_region_name(value):
                names.add(value)
            else:
                raise PolicyError(
                    f"allowed_regions: {value!r} is neither a jurisdiction "
                    f"({', '.join(JURISDICTIONS)}) nor a region name"
                )
        return cls(frozenset(names), frozenset(jurisdictions), mode, regions)


UNRESTRICTED = ResidencyPolicy()
"""Any region, standard retention."""
