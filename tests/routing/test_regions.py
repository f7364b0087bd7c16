from __future__ import annotations

import pytest

from levant.routing import DEFAULT_REGIONS, PolicyError, RegionRegistry, ResidencyPolicy


def test_eu_regions_are_also_eea() -> None:
    assert DEFAULT_REGIONS.jurisdictions("eu-west-paris") == {"EU", "EEA"}
    assert DEFAULT_REGIONS.jurisdictions("eea-north-oslo") == {"EEA"}
    assert DEFAULT_REGIONS.jurisdictions("us-east") == {"US"}
    assert DEFAULT_REGIONS.jurisdictions("nowhere-known") == frozenset()


def test_parse_workspace_regions_and_jurisdictions() -> None:
    policy = ResidencyPolicy.from_workspace(["eu", "ch-zurich"], "zero")
    assert policy.allowed_jurisdictions == frozenset({"EU"})
    assert policy.allowed_regions == frozenset({"ch-zurich"})
    assert policy.retention == "zero"
    assert policy.allows("eu-west-paris") and policy.allows("ch-zurich")
    assert not policy.allows("us-east") and not policy.allows("eea-north-oslo")


def test_eea_policy_includes_eu_and_eea_only_regions() -> None:
    policy = ResidencyPolicy.from_workspace(["EEA"])
    assert policy.allows("eu-central-frankfurt") and policy.allows("eea-north-oslo")
    assert not policy.allows("ch-zurich") and not policy.allows("uk-south-london")


def test_null_is_unrestricted_and_empty_allows_nothing() -> None:
    anything = ResidencyPolicy.from_workspace(None)
    assert anything.unrestricted and anything.allows("us-east") and anything.allows("local")
    nothing = ResidencyPolicy.from_workspace([])
    assert not nothing.allows("eu-west-paris")
    assert nothing.describe() == "workspace policy allows no region"


def test_unclassified_region_only_when_named() -> None:
    assert not ResidencyPolicy.from_workspace(["EU"]).allows("local")
    assert ResidencyPolicy.from_workspace(["local"]).allows("local")


def test_description_names_the_jurisdiction_and_regions() -> None:
    policy = ResidencyPolicy.from_workspace(["EU"])
    text = policy.describe(["eu-west-paris", "us-east", "eu-central-frankfurt"])
    assert text == "workspace policy allows only EU regions (eu-west-paris, eu-central-frankfurt)"
    assert ResidencyPolicy.from_workspace(["us-east"], "zero").describe() == (
        "workspace policy allows only region us-east with zero retention"
    )


@pytest.mark.parametrize("bad", [["Not A Region"], [""], [3], "EU"])
def test_malformed_entries_are_refused(bad: object) -> None:
    with pytest.raises(PolicyError):
        ResidencyPolicy.from_workspace(bad)  # type: ignore[arg-type]


def test_unknown_retention_is_refused() -> None:
    with pytest.raises(PolicyError, match="retention"):
        ResidencyPolicy.from_workspace(None, "forever")


def test_custom_region_registry() -> None:
    regions = RegionRegistry({})
    regions.register("eu-west-lyon", ["EU"])
    policy = ResidencyPolicy.from_workspace(["EEA"], regions=regions)
    assert policy.allows("eu-west-lyon")
    with pytest.raises(PolicyError, match="unknown jurisdiction"):
        regions.register("mars-1", ["MARS"])


def test_zero_retention_needs_a_deployment_that_retains_nothing() -> None:
    zero = ResidencyPolicy(retention="zero")
    assert zero.allows_retention(True) and not zero.allows_retention(False)
    assert ResidencyPolicy().allows_retention(False)
