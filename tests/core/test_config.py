"""Typed component configs: validation, coercion and override parsing."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest

from protsteps.config import check_config_class, fields_of, from_dict, option, parse_value, to_dict
from protsteps.errors import ConfigError


@dataclasses.dataclass
class Settings:
    radius: float = option(7.0, "Radius (Å).")
    knn: int = option(0, "Neighbours.")
    mode: Literal["sum", "mean"] = option("sum", "Reduction.")
    enabled: bool = option(True, "On or off.")
    weights: Path | None = option(None, "A file.")
    sizes: list[int] = option([64, 64], "Layer sizes.")


def test_values_are_checked_and_converted():
    s = from_dict(
        Settings, {"radius": 8, "mode": "mean", "weights": "w.pt", "sizes": [1, 2, 3]}, section="[x]"
    )
    assert s.radius == 8.0 and isinstance(s.radius, float)
    assert s.weights == Path("w.pt")
    assert s.sizes == [1, 2, 3]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"radius": "far"}, "[x] radius: expected a number, got str 'far'"),
        ({"knn": 2.5}, "[x] knn: expected an integer, got float 2.5"),
        ({"knn": True}, "[x] knn: expected an integer, got bool True"),
        ({"enabled": 1}, "[x] enabled: expected true or false, got int 1"),
        ({"mode": "max"}, "[x] mode: 'max' is not one of 'sum', 'mean'"),
        ({"sizes": "64"}, "[x] sizes: expected a list, got str '64'"),
        ({"sizes": [1, "a"]}, "[x] sizes[1]: expected an integer, got str 'a'"),
        (
            {"radiuss": 3},
            "unknown key 'radiuss' in [x] (did you mean 'radius'?); allowed keys: radius, knn, mode, enabled, weights, sizes",
        ),
    ],
)
def test_bad_values_name_the_key_and_section(values, message):
    with pytest.raises(ConfigError) as err:
        from_dict(Settings, values, section="[x]")
    assert str(err.value) == message


def test_mutable_defaults_are_not_shared():
    a, b = Settings(), Settings()
    a.sizes.append(1)
    assert b.sizes == [64, 64]


def test_fields_describe_type_default_and_help():
    info = {f.name: f for f in fields_of(Settings)}
    assert (
        info["radius"].type == "float"
        and info["radius"].default == 7.0
        and info["radius"].help == "Radius (Å)."
    )
    assert info["mode"].type == "'sum' | 'mean'" and info["mode"].choices == ("sum", "mean")
    assert info["weights"].type == "path | None"
    assert info["sizes"].type == "list[int]"


def test_to_dict_is_toml_ready_and_round_trips():
    s = Settings(weights=Path("/tmp/w.pt"), sizes=[3])
    plain = to_dict(s)
    assert plain["weights"] == "/tmp/w.pt"
    assert from_dict(Settings, {k: v for k, v in plain.items() if v is not None}, section="[x]") == s


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128", 128),
        ("0.5", 0.5),
        ("true", True),
        ("[1, 2]", [1, 2]),
        ('"7"', "7"),
        ("gin", "gin"),
        ("a b", "a b"),
    ],
)
def test_set_values_parse_as_toml_or_strings(text, value):
    assert parse_value(text) == value


def test_config_classes_are_checked_when_registered():
    @dataclasses.dataclass
    class OptionalWithDefault:
        path: str | None = option("x", "bad: optional with a non-None default")

    with pytest.raises(ConfigError, match="optional config field 'path' must default to None"):
        check_config_class(OptionalWithDefault, "encoder 'x'")
    with pytest.raises(ConfigError, match="must be a dataclass"):
        check_config_class(dict, "encoder 'x'")
    check_config_class(Settings, "encoder 'x'")
