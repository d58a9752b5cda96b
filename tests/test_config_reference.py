"""The configuration reference in README.md is in step with the schema: every key, every default.

The defaults have one home (the schema, fed by the engine's ``ModelConfig``); the README
table and ``config.yaml`` only point to it. These tests fail when a key is added without
documentation, or a documented default drifts from the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from daemon.config import Config, InboxConfig, load_config
from engine.models.served import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def _schema_defaults(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Every leaf key of the schema with its default (``"required"`` where there is none)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        key = prefix + name
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.update(_schema_defaults(annotation, key + "."))
        elif field.default is PydanticUndefined:
            out[key] = "required"
        else:
            out[key] = field.default
    return out


def _documented() -> dict[str, str]:
    """The README's configuration table: key -> default cell text."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    out: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = [k.strip().strip("`") for k in cells[0].split(" / ")]
        defaults = [d.strip().strip("`") for d in cells[1].split(" / ")]
        if len(defaults) == 1:
            defaults *= len(keys)
        first = keys[0]
        section_prefix = first.rsplit(".", 1)[0] + "." if "." in first else ""
        for key, default in zip(keys, defaults, strict=True):
            full = key if "." in key or key == first else section_prefix + key
            out[full] = default
    return out


def _schema() -> dict[str, Any]:
    keys = {k: v for k, v in _schema_defaults(Config).items() if k != "inboxes"}
    keys.update({f"inboxes[].{k}": v for k, v in _schema_defaults(InboxConfig).items()})
    keys["inboxes"] = "required"
    return keys


def test_every_key_of_the_schema_is_documented_and_nothing_else() -> None:
    documented = set(_documented())
    schema = set(_schema()) - {"inboxes"}
    assert schema - documented == set(), "keys missing from README.md, Configuration"
    assert documented - schema == set(), "README.md documents keys the schema does not have"


def test_every_documented_default_is_the_schema_default() -> None:
    schema = _schema()
    for key, cell in _documented().items():
        expected = schema[key]
        if expected == "required":
            assert cell == "required", key
            continue
        value = yaml.safe_load(cell)
        if isinstance(expected, tuple):
            expected = list(expected)
        assert value == expected, f"{key}: README says {cell!r}, the schema {expected!r}"


def test_the_model_section_takes_its_defaults_from_the_engine() -> None:
    config = load_config(REPO_ROOT / "config.yaml")
    engine = ModelConfig()
    served = config.engine_model_config()
    for field in type(config.model).model_fields:
        assert getattr(served, field) == getattr(engine, field)
    assert served == engine  # the CNN off, nothing set: exactly the engine's defaults


def test_config_yaml_restates_no_default() -> None:
    """The shipped file sets only what differs from the defaults (the demo's folders)."""
    raw = yaml.safe_load((REPO_ROOT / "config.yaml").read_text(encoding="utf-8"))
    assert set(raw) == {"inboxes", "state_dir"}
    assert all(set(inbox) == {"path", "name"} for inbox in raw["inboxes"])
    assert not re.search(r"^\s*(model|cnn|worker|watch):", (REPO_ROOT / "config.yaml").read_text(), re.M)
