"""Poison messages: hypothesis-generated HL7- and FHIR-shaped junk, truncations, wrong encodings and
oversize fields, each one bad by construction (no chance of a valid message), plus valid ones."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fhir_builder import encode, observation
from tests.hl7_builder import adt

T = TypeVar("T")

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
KEYS = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=12)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)
RESOURCE_TYPES = st.sampled_from(["Encounter", "Observation", "Bundle", "QuestionnaireResponse", "Procedure", "Nope"])


@st.composite
def fhir_junk(draw: st.DrawFn) -> bytes:
    """JSON with a plausible resourceType and random content: never a valid resource (no subject identifier)."""
    body = draw(st.dictionaries(KEYS.filter(lambda k: k != "subject"), JSON_VALUES, max_size=6))
    kind = draw(st.sampled_from(["object", "resource", "not-an-object", "not-json"]))
    if kind == "resource":
        body["resourceType"] = draw(RESOURCE_TYPES)
        return json.dumps(body).encode()
    if kind == "not-an-object":
        return json.dumps(draw(st.lists(JSON_VALUES, max_size=4) | JSON_SCALARS)).encode()
    if kind == "not-json":
        return draw(st.binary(min_size=1, max_size=200)).replace(b"{", b"(")
    return json.dumps({k: v for k, v in body.items() if k != "resourceType"}).encode()


@st.composite
def hl7_junk(draw: st.DrawFn) -> bytes:
    """HL7-shaped: random segments after a header missing what a message needs (type, control id, PID)."""
    segment_names = st.sampled_from(["MSH", "EVN", "PID", "PV1", "ZZZ", "OBX", "msh", ""])
    fields = st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r", blacklist_categories=["Cs"]), max_size=20), max_size=8
    )
    segments = draw(st.lists(st.tuples(segment_names, fields), min_size=0, max_size=6))
    header = draw(st.sampled_from(["MSH|^~\\&|", "MSH|", "", "MSH|^~\\&|A|B|C|D||"]))
    text = header + "\r".join("|".join([name, *values]) for name, values in segments)
    return draw(st.sampled_from([text.encode(), text.encode("utf-16"), text.encode() + b"\x00\xff\xfe"]))


def collect_examples(strategy: st.SearchStrategy[T], n: int) -> list[T]:
    """`n` values hypothesis draws (derandomized: the same every run), for tests that cannot be `@given`."""
    found: list[T] = []

    @settings(
        max_examples=n,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def draw(value: T) -> None:
        found.append(value)

    draw()
    return found


@dataclass(frozen=True, slots=True)
class Poison:
    feed: str  # "adt" | "fhir"
    value: bytes
    kind: str


def good_hl7(i: int) -> bytes:
    return adt(control_id=f"GOOD-{i}", mrn=f"GOODMRN{i}", visit_number=f"VG{i}").encode()


def good_fhir(i: int) -> bytes:
    return encode(observation(mrn=f"GOODFHIR{i}", ident=f"OBS-GOOD-{i}"))


def poison(n: int, max_bytes: int, seed: int = 9) -> list[Poison]:
    rng = random.Random(seed)
    quarter = n // 4
    out = [Poison("adt", v, "hypothesis-hl7") for v in collect_examples(hl7_junk(), quarter)]
    out += [Poison("fhir", v, "hypothesis-fhir") for v in collect_examples(fhir_junk(), quarter)]
    makers: list[Callable[[int], Poison]] = [
        # Cut inside MSH, before the control id: no message can be read from what is left.
        lambda i: Poison("adt", (m := good_hl7(10_000 + i))[: rng.randrange(0, m.index(b"|ADT^"))], "truncated-hl7"),
        lambda i: Poison("fhir", (m := good_fhir(10_000 + i))[: rng.randrange(1, len(m) - 1)], "truncated-fhir"),
        lambda i: Poison("adt", good_hl7(20_000 + i).decode().encode(rng.choice(["utf-16", "utf-32"])), "encoding-hl7"),
        lambda i: Poison("fhir", good_fhir(20_000 + i).replace(b'"final"', b'"fin\xe9l"'), "encoding-fhir"),
        lambda i: Poison("adt", adt(family="X" * (max_bytes + rng.randrange(1, 5000))).encode(), "huge-hl7"),
        lambda i: Poison("fhir", encode(observation(ident="I" * (max_bytes + 10))), "huge-fhir"),
    ]
    i = 0
    while len(out) < n:
        out.append(makers[i % len(makers)](i))
        i += 1
    return out
