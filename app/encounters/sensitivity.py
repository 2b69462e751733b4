"""Behavioral-health flag and 42 CFR Part 2 labels from service, unit and ICD-10 diagnoses (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.encounters.notice import Diagnosis

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
# v3 ActCode: ETH = substance abuse information sensitivity, 42CFRPart2 = the policy,
# PSY = psychiatry disorder information sensitivity; R = restricted confidentiality.
PART2_LABELS = (f"{ACT_CODE}|ETH", f"{ACT_CODE}|42CFRPart2", f"{CONFIDENTIALITY}|R")
BH_LABELS = (f"{ACT_CODE}|PSY",)

ICD10_SYSTEMS = {
    "I10",
    "I10C",
    "ICD10",
    "ICD-10",
    "ICD10CM",
    "ICD-10-CM",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.90",  # ICD-10-CM's OID, as some feeds name it
    "urn:oid:2.16.840.1.113883.6.90",
}
_ICD10_SHAPE = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")


@dataclass(frozen=True, slots=True)
class SensitivityPolicy:
    bh_services: frozenset[str]
    bh_units: frozenset[str]
    bh_icd10_range: tuple[str, str]  # inclusive 3-character categories, e.g. F01..F99
    part2_icd10_range: tuple[str, str]  # e.g. F10..F19
    # A stay on a substance-use unit or service is Part 2 data before any diagnosis is coded.
    part2_services: frozenset[str] = frozenset()
    part2_units: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Sensitivity:
    behavioral_health: bool
    part2: bool

    @property
    def labels(self) -> tuple[str, ...]:
        labels: list[str] = []
        if self.behavioral_health:
            labels += BH_LABELS
        if self.part2:
            labels += PART2_LABELS
        return tuple(labels)


_ICD10_SYSTEMS_UPPER = frozenset(s.upper() for s in ICD10_SYSTEMS)


def _icd10_category(dx: Diagnosis) -> str | None:
    code = dx.code.strip().upper()
    if dx.system is not None and dx.system.upper() not in _ICD10_SYSTEMS_UPPER:
        return None
    if not _ICD10_SHAPE.match(code):
        return None
    return code[:3]


def _in_range(category: str, bounds: tuple[str, str]) -> bool:
    return bounds[0] <= category <= bounds[1]


def classify(
    policy: SensitivityPolicy,
    *,
    hospital_service: str | None,
    location: str | None,
    diagnoses: Iterable[Diagnosis],
) -> Sensitivity:
    categories = [c for c in (_icd10_category(d) for d in diagnoses) if c]
    unit = (location or "").split("^", 1)[0].upper()
    bh = (
        (hospital_service or "").upper() in policy.bh_services
        or (bool(unit) and unit in policy.bh_units)
        or any(_in_range(c, policy.bh_icd10_range) for c in categories)
    )
    part2 = (
        any(_in_range(c, policy.part2_icd10_range) for c in categories)
        or (hospital_service or "").upper() in policy.part2_services
        or (bool(unit) and unit in policy.part2_units)
    )
    return Sensitivity(behavioral_health=bh or part2, part2=part2)
