"""The rules file: its schema, and loading it with errors that name the offending rule and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.rules.facts import EncounterEventKind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Trigger(_Strict):
    """When a rule fires, and (the same conditions) while its task stays valid."""

    event: EncounterEventKind
    encounter_classes: list[str] = Field(default_factory=list, description="Encounter.class codes; empty = any")
    encounter_statuses: list[str] = Field(
        default_factory=list, description="Encounter.status the visit must be in after the event; empty = any"
    )
    skip_deceased: bool = True


class TaskSpec(_Strict):
    type: str = Field(min_length=1, max_length=64)
    priority: Literal["routine", "urgent", "asap", "stat"] = "routine"


class _Offset(_Strict):
    days: int = Field(default=0, ge=0)
    hours: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _positive(self) -> _Offset:
        if self.days == 0 and self.hours == 0:
            raise ValueError("due needs days or hours > 0")
        return self


class DueSpec(_Offset):
    anchor: Literal["discharge", "admit", "event"]


class RouteSpec(_Strict):
    role: str = Field(min_length=1, max_length=32)


class RuleSpec(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    enabled: bool = True
    trigger: Trigger
    task: TaskSpec
    due: DueSpec
    route: RouteSpec


class MemberDueSpec(_Offset):
    """Due time counted from the roster's arrival (the member's assignment)."""


class MemberRouteSpec(_Strict):
    """BH-program members go to `bh_role`, children to `pediatric_role`, everyone else to `role`."""

    role: str = Field(min_length=1, max_length=32)
    bh_role: str | None = Field(default=None, min_length=1, max_length=32)
    pediatric_role: str | None = Field(default=None, min_length=1, max_length=32)
    pediatric_under_age: int = Field(default=18, ge=1, le=30)


class MemberRuleSpec(_Strict):
    """A roster rule: fires on a reconciliation outcome (today: a member added to a roster)."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    version: str = Field(min_length=1, max_length=32)
    description: str = ""
    enabled: bool = True
    on: Literal["added"]
    task: TaskSpec
    due: MemberDueSpec
    route: MemberRouteSpec


class RulesFile(_Strict):
    rule: list[RuleSpec]
    member_rule: list[MemberRuleSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesFile:
        ids = [r.id for r in (*self.rule, *self.member_rule)]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule ids: {', '.join(dupes)}")
        return self


class RulesFileError(ValueError):
    pass


def load_rules(path: Path) -> RulesFile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesFileError(f"rules file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"rules file {path} is not valid TOML: {exc}") from None
    try:
        return RulesFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise RulesFileError(f"rules file {path} is invalid: {problems}") from None
