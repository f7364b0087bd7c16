from __future__ import annotations

from pathlib import Path

import pytest

from levant.routing import RoutingConfigError, load_routing_config, upstream_keys

GOOD = """
[gateway]
region = "eu-west-paris"
allowed_regions = ["EU", "us-east"]

[[regions]]
name = "eu-west-lyon"
jurisdictions = ["EU"]

[[deployments]]
name = "smollm2-paris"
model = "smollm2-135m-instruct"
backend = "local"

[[deployments]]
name = "smollm2-lyon"
model = "smollm2-135m-instruct"
backend = "upstream"
region = "eu-west-lyon"
weight = 3
[deployments.upstream]
url = "http://lyon.test:8000"

[[deployments]]
name = "smollm2-us"
model = "smollm2-135m-instruct"
backend = "upstream"
region = "us-east"
[deployments.upstream]
url = "https://us.test/v1"
api_key_env = "US_KEY"
model = "smollm2"
dialect = "openai"
read_timeout_s = 5
"""


def write(tmp_path: Path, text: str, name: str = "levant.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_toml(tmp_path: Path) -> None:
    cfg = load_routing_config(write(tmp_path, GOOD))
    assert cfg.region == "eu-west-paris"
    local, lyon, us = cfg.deployments
    assert (local.backend, local.region, local.retains_nothing) == ("local", "eu-west-paris", True)
    assert lyon.region == "eu-west-lyon" and lyon.weight == 3 and not lyon.retains_nothing
    assert cfg.regions.jurisdictions("eu-west-lyon") == {"EU", "EEA"}
    assert us.upstream is not None and us.upstream.chat_url == "https://us.test/v1/chat/completions"
    assert us.upstream_model == "smollm2" and us.upstream.read_timeout_s == 5
    assert lyon.upstream is not None
    assert lyon.upstream.chat_url == "http://lyon.test:8000/v1/chat/completions"
    assert [d.name for d in cfg.for_model("smollm2-135m-instruct")] == [
        "smollm2-paris",
        "smollm2-lyon",
        "smollm2-us",
    ]


def test_region_flag_overrides_the_file(tmp_path: Path) -> None:
    cfg = load_routing_config(
        write(tmp_path, GOOD.replace('region = "eu-west-paris"\n', "")),
        region="eu-central-frankfurt",
    )
    assert cfg.deployments[0].region == "eu-central-frankfurt"


def test_yaml_has_the_same_shape(tmp_path: Path) -> None:
    text = """
gateway: {region: eu-west-paris}
deployments:
  - {name: a, model: m, backend: local}
  - name: b
    model: m
    backend: upstream
    region: us-east
    upstream: {url: "http://b.test"}
"""
    cfg = load_routing_config(write(tmp_path, text, "levant.yaml"))
    assert [(d.name, d.region) for d in cfg.deployments] == [
        ("a", "eu-west-paris"),
        ("b", "us-east"),
    ]


def error_for(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(RoutingConfigError) as info:
        load_routing_config(path)
    message = str(info.value)
    assert str(path) in message  # every error names the file
    return message


def test_missing_region_names_the_entry(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        '[[deployments]]\nname = "us"\nmodel = "m"\nbackend = "upstream"\n'
        '[deployments.upstream]\nurl = "http://x.test"\n',
    )
    assert "deployments[0] ('us')" in message and "region is required" in message


def test_unknown_backend(tmp_path: Path) -> None:
    message = error_for(
        tmp_path, '[[deployments]]\nname = "x"\nmodel = "m"\nbackend = "tpu"\nregion = "us-east"\n'
    )
    assert "deployments[0] ('x')" in message and "backend" in message
    assert "'local', 'upstream' or 'ray'" in message


def test_upstream_needs_its_url(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        '[[deployments]]\nname = "x"\nmodel = "m"\nbackend = "upstream"\nregion = "us-east"\n',
    )
    assert "needs an [upstream] table" in message


def test_unknown_region_is_a_typo_until_declared(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        '[[deployments]]\nname = "x"\nmodel = "m"\nbackend = "upstream"\nregion = "eu-west-pari"\n'
        '[deployments.upstream]\nurl = "http://x.test"\n',
    )
    assert "unknown region 'eu-west-pari'" in message and "[[regions]]" in message


def test_gateway_may_not_reach_outside_its_own_policy(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        '[gateway]\nallowed_regions = ["EU"]\n'
        '[[deployments]]\nname = "us"\nmodel = "m"\nbackend = "upstream"\nregion = "us-east"\n'
        '[deployments.upstream]\nurl = "http://x.test"\n',
    )
    assert "'us-east' is outside what this gateway may reach" in message
    assert "allows only EU regions" in message


def test_local_deployment_cannot_claim_another_region(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        '[gateway]\nregion = "eu-west-paris"\n'
        '[[deployments]]\nname = "l"\nmodel = "m"\nbackend = "local"\nregion = "us-east"\n',
    )
    assert "runs in the gateway's region 'eu-west-paris', not 'us-east'" in message


def test_duplicate_names_and_unknown_fields(tmp_path: Path) -> None:
    dup = '[[deployments]]\nname = "l"\nmodel = "m"\nbackend = "local"\n' * 2
    assert "duplicate deployment name 'l'" in error_for(tmp_path, dup)
    extra = '[[deployments]]\nname = "l"\nmodel = "m"\nbackend = "local"\nwieght = 2\n'
    assert "wieght" in error_for(tmp_path, extra)


def test_bad_syntax_and_missing_file(tmp_path: Path) -> None:
    assert "not valid toml" in error_for(tmp_path, "[[deployments]\n")
    with pytest.raises(RoutingConfigError, match="cannot read"):
        load_routing_config(tmp_path / "absent.toml")


def test_keys_come_from_the_named_variable_and_are_never_in_errors(tmp_path: Path) -> None:
    cfg = load_routing_config(write(tmp_path, GOOD))
    keys = upstream_keys(cfg, {"US_KEY": "sk-secret-123"})
    assert keys == {"smollm2-lyon": None, "smollm2-us": "sk-secret-123"}
    with pytest.raises(RoutingConfigError, match="US_KEY") as info:
        upstream_keys(cfg, {})
    assert "sk-" not in str(info.value)
    assert "sk-secret-123" not in repr(cfg)
