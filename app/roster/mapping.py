"""Per-ACO layouts of delimited rosters: which column holds which field, how dates and flags read.

`default` is built in (the documented header, ISO dates, Y/N flags); others come from the
CARECOORD_ROSTER_MAPPINGS setting, validated here so a typo fails at start, naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.roster.records import DEFAULT_HEADER, FIELDS, REQUIRED_FIELDS

DEFAULT_MAPPING_NAME = "default"
ISO_DATE = "%Y-%m-%d"


class MappingError(ValueError):
    """The mapping does not fit the file (a mapped column is missing): the whole file is refused."""


class RosterMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = DEFAULT_MAPPING_NAME
    delimiter: str = Field(default=",", min_length=1, max_length=1, description='"," or "|" (pipe) or "\\t"')
    columns: dict[str, str] = Field(
        default_factory=lambda: {f: f for f in DEFAULT_HEADER}, description="field -> column header in the file"
    )
    constants: dict[str, str] = Field(
        default_factory=dict, description="field -> value for fields the file does not carry (e.g. the MRN system)"
    )
    date_formats: list[str] = Field(default=[ISO_DATE], min_length=1, description="strptime formats, tried in order")
    true_values: list[str] = ["Y", "YES", "TRUE", "1"]
    false_values: list[str] = ["N", "NO", "FALSE", "0", ""]
    sex_codes: dict[str, str] = Field(
        default_factory=lambda: {"M": "M", "F": "F", "O": "O", "U": "U", "MALE": "M", "FEMALE": "F"},
        description="file code (upper case) -> M, F, O or U",
    )

    @field_validator("columns", "constants")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown roster field(s): {', '.join(unknown)} (known: {', '.join(FIELDS)})")
        return value

    @model_validator(mode="after")
    def _required_fields_have_a_source(self) -> RosterMapping:
        missing = [f for f in REQUIRED_FIELDS if f not in self.columns and f not in self.constants]
        if missing:
            raise ValueError(f"mapping {self.name!r} gives no column or constant for {', '.join(missing)}")
        return self

    def column_indexes(self, header: list[str]) -> dict[str, int]:
        """Where each mapped field sits in this file; a mapped column the header lacks refuses the file."""
        positions = {name.strip(): i for i, name in enumerate(header)}
        missing = [col for col in self.columns.values() if col not in positions]
        if missing:
            raise MappingError(f"mapping {self.name!r}: column(s) missing from the header: {', '.join(missing)}")
        return {field: positions[col] for field, col in self.columns.items()}


DEFAULT_MAPPING = RosterMapping()


def load_mappings(configured: Mapping[str, Mapping[str, Any]]) -> dict[str, RosterMapping]:
    mappings = {DEFAULT_MAPPING_NAME: DEFAULT_MAPPING}
    for name, spec in configured.items():
        try:
            mappings[name] = RosterMapping.model_validate({"name": name, **spec})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise MappingError(f"roster mapping {name!r} is invalid: {problems}") from None
    return mappings
