"""The fast ER7 reader against python-hl7: every decode must equal `decode_adt_reference`'s, error for error.

python-hl7 is the oracle. Outcomes are compared whole: the EncounterNotice (a frozen dataclass), or the
Hl7DecodeError's field and reason, or any other exception's type and text (python-hl7 quirks included).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import hl7
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import tests.unit.test_hl7_decode as decode_tests
from app.consumers.hl7v2_decode import (
    DecodeOptions,
    Hl7DecodeError,
    Hl7Reader,
    LibraryReader,
    decode_adt,
    decode_adt_reference,
    parse_message,
    read_message,
)
from app.consumers.hl7v2_fast import Er7Message, parse_er7
from tests.hl7_builder import adt, segment

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "fixtures" / "samples" / "hl7v2"
OPTIONS = DecodeOptions(
    default_zone=ZoneInfo("America/New_York"),
    authority_systems={"GOODHEALTH": "http://goodhealth.example.org/mrn"},
)
DEFAULT_SEPARATORS = "|^~\\&"  # MSH-1, then MSH-2: component, repetition, escape, subcomponent


def outcome(decode: Callable[[str, DecodeOptions], object], text: str) -> tuple:
    try:
        return ("decoded", decode(text, OPTIONS))
    except Hl7DecodeError as exc:
        return ("rejected", exc.field, exc.reason)
    except Exception as exc:  # python-hl7 has a few; the fast reader must have the same ones
        return ("raised", type(exc).__name__, str(exc))


def assert_same(text: str) -> tuple:
    fast = outcome(decode_adt, text)
    assert fast == outcome(decode_adt_reference, text)
    return fast


def with_separators(text: str, separators: str) -> str:
    """The message re-encoded with other MSH-1/MSH-2 characters (same order as DEFAULT_SEPARATORS)."""
    return text.translate(str.maketrans(DEFAULT_SEPARATORS, separators))


# --- realistic corpora --------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.hl7")), ids=lambda p: p.stem)
def test_every_sample_decodes_identically(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert isinstance(read_message(text), Er7Message)
    assert assert_same(text)[0] == "decoded"


def load_bench_corpus(n: int) -> list[str]:
    spec = importlib.util.spec_from_file_location("bench_ingest", ROOT / "bench" / "ingest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return [m.payload.decode("utf-8") for m in module.corpus(n, seed=3)]


def test_benchmark_corpus_decodes_identically() -> None:
    texts = load_bench_corpus(240)
    assert all(2048 <= len(t.encode()) <= 4096 for t in texts)
    for text in texts:
        assert assert_same(text)[0] == "decoded"


def builder_variations() -> list[str]:
    triggers = ["A01", "A02", "A03", "A04", "A08", "A11", "A13", "A31", "A40"]
    variants: list[dict] = [
        {},
        {"patient_class": "E", "hospital_service": "EMR"},
        {"patient_class": "O", "patient_type": "OBS"},
        {"patient_class": "", "visit_number": ""},
        {"location": "ICU^12^B", "diagnoses": (("I50.9", "I10"), ("E11.9", ""))},
        {"location": "^^^", "diagnoses": (("", "I10"),)},
        {"discharge_time": "20261121080000", "discharge_disposition": "20"},
        {"admit_time": "", "discharge_time": "20261121", "discharge_disposition": "41"},
        {"mrn": "M1~M2^^^OTHER^PI", "authority": "GOODHEALTH&1.2.3&ISO"},
        {"mrn": "M1^^^^A VERY LONG FREE TEXT TYPE", "authority": ""},
        {"family": "O\\T\\BRIEN", "given": "ANN\\S\\MARIE"},  # escapes: the accessor unescapes them
        {"family": "  SPACED  ", "given": "", "sex": "", "birth_date": ""},
        {"death_indicator": "y", "message_time": "20261120143000.1234+0530"},
        {"event_time": "", "message_time": "2026112014"},
        {"include_pv1": False},
        {"prior_mrn": "OLD1", "include_pv1": False},
        {"version": "2.3", "facility": "^ALT^ISO"},
        {"facility": "", "control_id": "  "},
        {"birth_date": "20301231"},
        {"event_time": "2026-11-20"},
    ]
    texts = [
        adt(trigger, **{"control_id": f"C{i}", **variant})
        for i, (trigger, variant) in enumerate(itertools.product(triggers, variants))
    ]
    framed = [
        "\x0b" + texts[0] + "\x1c\r",
        texts[1].replace("\r", "\n"),
        texts[2].replace("\r", "\r\n"),
        texts[3] + " \t\x0c",
        texts[3] + "\r\x0c",  # normalise keeps "\r\r\x0c"; hl7.parse strips it all, so no blank segment
        texts[4].replace("\rEVN", "\r\rEVN"),  # a blank line: python-hl7 then finds no segment at all
        texts[5].replace("\rPID", "\rZZZ|1\rPID"),
    ]
    return texts + framed


def test_builder_variations_decode_identically() -> None:
    outcomes = [assert_same(text) for text in builder_variations()]
    kinds = {o[0] for o in outcomes}
    assert kinds == {"decoded", "rejected"}  # both paths are exercised


@pytest.mark.parametrize(
    ("text", "field"),
    next(m for m in decode_tests.test_bad_messages_name_the_field.pytestmark if m.name == "parametrize").args[1],
)
def test_bad_messages_are_rejected_with_the_same_field(text: str, field: str) -> None:
    assert assert_same(text)[:2] == ("rejected", field)


# --- encoding characters ------------------------------------------------------------------------


@pytest.mark.parametrize("separators", ["#$%^@", "|!*/_", "!@#$%", "{}[]:"])
@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.hl7"))[:6], ids=lambda p: p.stem)
def test_non_default_encoding_characters(path: Path, separators: str) -> None:
    text = with_separators(path.read_text(encoding="utf-8"), separators)
    assert text.startswith("MSH" + separators)
    assert isinstance(read_message(text), Er7Message)
    assert assert_same(text)[0] == "decoded"


def test_non_default_encoding_characters_decode_the_same_values() -> None:
    text = adt(diagnoses=(("I50.9", "I10"),), family="O\\T\\BRIEN")
    default = decode_adt(text, OPTIONS)
    assert default.family_name == "O&BRIEN"
    assert decode_adt(with_separators(text, "#$%^@"), OPTIONS) == default.__class__(
        **{**{f: getattr(default, f) for f in default.__dataclass_fields__}, "family_name": "O@BRIEN"}
    )


@pytest.mark.parametrize(
    ("header", "fast"),
    [
        ("MSH|^~\\&|", True),
        ("MSH|^~\\&#|", True),  # v2.7 truncation character: ignored, as python-hl7 does
        ("MSH|^~|", True),  # short MSH-2: defaults for escape and subcomponent
        ("MSH||", True),  # empty MSH-2: all defaults
        ("MSH|^^\\&|", False),  # repeated character: python-hl7's parse plan misbehaves; it decides
        ("MSH|^~#|", True),  # another escape character, default subcomponent separator
        ("MSH|^~\\\r", False),  # MSH-2 runs into the next segment: python-hl7 reads on, to a CR separator
        ("MSH|^~\\&\r", True),  # ... past its fifth character: harmless
        ("MSH|A~\\&|", False),  # a letter as a separator
        ("MSH| ~\\&|", False),  # whitespace as a separator
        ("MSH|^~\\", False),  # no second field separator in MSH
    ],
)
def test_header_forms_take_the_fast_path_or_python_hl7(header: str, fast: bool) -> None:
    text = header + adt()[len("MSH|^~\\&|") :]
    assert (parse_er7(text) is not None) == fast
    assert_same(text)  # python-hl7 may raise (an AssertionError for "^^"): then so does decode_adt


# --- python-hl7 quirks the fast reader reproduces --------------------------------------------------


def test_accessor_values_are_unescaped_but_dg1_codes_are_not() -> None:
    text = adt(family="O\\F\\B\\X41\\", diagnoses=(("C\\F\\D", "I10"),))
    notice = assert_same(text)[1]
    assert notice.family_name == "O|BA"  # hl7.Message[path] unescapes
    assert notice.diagnoses[0].code == "C\\F\\D"  # str() of an hl7 container does not


def test_dg1_code_without_components_is_kept_by_both_readers() -> None:
    # python-hl7 keeps a separator-free field as a plain str; `leaf` reads it on both readers.
    text = adt().replace("\rPV1", "\rDG1|1||I50.9\rDG1|2||J44~X\rPV1")
    notice = assert_same(text)[1]
    assert [d.code for d in notice.diagnoses] == ["I50.9", "J44"]


def test_blank_line_hides_every_segment_as_python_hl7_does() -> None:
    assert assert_same(adt().replace("\rEVN", "\r\rEVN"))[:2] == ("rejected", "MSH-9")


def test_bad_escape_sequence_raises_the_same_error() -> None:
    assert assert_same(adt(family="\\.brx\\"))[:2] == ("raised", "ValueError")


def test_segment_without_fields_is_not_found() -> None:
    text = "\r".join(s if not s.startswith("PV1") else "PV1" for s in adt().split("\r"))
    assert assert_same(text)[:2] == ("rejected", "PV1")


# --- property tests -----------------------------------------------------------------------------

ESCAPES = [
    "\\F\\",
    "\\S\\",
    "\\T\\",
    "\\R\\",
    "\\E\\",
    "\\X41\\",
    "\\X4Z\\",
    "\\.br\\",
    "\\.sp2\\",
    "\\.in\\",
    "\\H\\",
    "\\N\\",
    "\\Zfoo\\",
    "\\C2842\\",
    "\\M2442\\",
    "\\\\",
    "\\",
]
COMMON_PIECES = st.one_of(
    st.sampled_from(
        [
            "",
            "^",
            "~",
            "&",
            "^^",
            "~~",
            "&&",
            " ",
            "  ",
            '""',
            "é",
            "中",
            "😀",
            "\u00a0",
            "\u2028",
            "\x0c",
            "Y",
            "N",
            "20",
            "I",
            "OBS",
            "GOODHEALTH",
            "MRN1",
            *ESCAPES,
        ]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n|"), max_size=5),
)
# Rarely: shift the fields, or start a segment inside a field (blank lines are tested on their own: python-hl7
# then finds no segment at all, so they would only hide everything else).
RARE_PIECES = st.sampled_from(
    ["|", "|", "\x0b", "\x1c", "\rZZZ|", "\nDG1|1|x|", "\rPV1|", "\rPID|1||", "\rBHS", "\rMSH^x", "\rFHS|^~|a|b"]
)
PIECES = st.one_of(*[COMMON_PIECES] * 30, RARE_PIECES)
CONTENT = st.lists(PIECES, max_size=6).map("".join)
GOOD_TIMES = ["20261120143000-0500", "202611201430", "2026", "20261120143000.1234+0530", "20261121080000-0000"]
BAD_TIMES = ["19700412", "2026-11-20", "20261399", "notadate", "20261120143000+2500", ""]
TIMESTAMPS = st.sampled_from(GOOD_TIMES * 3 + BAD_TIMES)
VALUES = st.one_of(CONTENT, CONTENT, TIMESTAMPS)
TRIGGERS = st.sampled_from(["A01", "A03", "A04", "A08", "A11", "A13", "A31", "A40"] * 2 + ["a03", ""])


def mostly(value: str, *others: str) -> st.SearchStrategy[str]:
    return st.sampled_from([value] * 4 * len(others) + list(others))


def fields(base: dict[int, str], positions: int) -> st.SearchStrategy[dict[int, str]]:
    return st.dictionaries(st.integers(1, positions), VALUES, max_size=6).map(lambda extra: {**base, **extra})


@st.composite
def messages(draw: st.DrawFn) -> str:
    trigger = draw(TRIGGERS)
    msh = "MSH|^~\\&|" + "|".join(
        [
            "ADT1",
            draw(mostly("GOODHEALTH", "^ALT", "")),
            "CARECOORD",
            "ACO",
            draw(mostly(GOOD_TIMES[0], *BAD_TIMES)),
            "",
            f"ADT^{trigger}^ADT_{trigger}",
            draw(mostly("MSG-1", "", "ID~2", "A\\F\\B")),
            "P",
            "2.5.1",
        ]
    )
    segments = [msh, segment("EVN", draw(fields({1: trigger, 2: "20261120142500-0500"}, 3)))]
    if draw(st.booleans()) or draw(st.booleans()):
        segments.append(
            segment(
                "PID",
                draw(
                    fields(
                        {
                            1: "1",
                            3: "MRN1^^^GOODHEALTH^MR~123^^^SSA&2.16.840&ISO^SS",
                            5: "DOE^JANE",
                            7: "19700412",
                            8: "F",
                        },
                        32,
                    )
                ),
            )
        )
    if trigger == "A40" or draw(st.booleans()):
        segments.append(segment("MRG", draw(fields({1: "OLD1^^^GOODHEALTH^MR"}, 4))))
    if draw(st.integers(0, 4)):
        segments.append(
            segment(
                "PV1",
                draw(
                    fields(
                        {
                            1: "1",
                            2: "I",
                            3: "4W^401^A",
                            10: "MED",
                            19: "V1^^^GOODHEALTH^VN",
                            36: "01",
                            44: "20261115083000-0500",
                            45: "20261120140000-0500",
                        },
                        50,
                    )
                ),
            )
        )
    segments += [
        segment("DG1", d) for d in draw(st.lists(fields({1: "1", 3: "I50.9^Heart failure^I10"}, 6), max_size=3))
    ]
    if draw(st.booleans()):
        segments.insert(draw(st.integers(1, len(segments))), segment("ZZZ", draw(fields({}, 4))))
    newline = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    framing = draw(st.sampled_from([("", ""), ("", "\r"), ("\x0b", "\x1c\r"), ("", " ")]))
    return framing[0] + newline.join(segments) + framing[1]


@st.composite
def encoded(draw: st.DrawFn) -> str:
    """A message with default, other distinct, or arbitrary (often degenerate) encoding characters."""
    text = draw(messages())
    start = 1 if text.startswith("\x0b") else 0
    choice = draw(st.integers(0, 2))
    if choice == 1:
        separators = draw(st.permutations("|^~\\&#$%@!*/:;=?_{}").map(lambda p: "".join(p[:5])))
        text = with_separators(text, separators)
    elif choice == 2:
        header = draw(st.text(st.sampled_from("|^~\\&#aZ1 \r"), max_size=7))
        text = text[: start + 3] + header + text[start + len("MSH|^~\\&") :]
    return text


SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(text=messages())
@example(text=adt(family="A\\.sp-1\\B", given="\\Xe9\\"))
def test_random_field_contents_decode_identically(text: str) -> None:
    assert_same(text)


@SETTINGS
@given(text=encoded())
@example(text=with_separators(adt(), "#$%^@"))
@example(text="MSH|")
def test_random_encoding_characters_decode_identically(text: str) -> None:
    assert_same(text)


# Accessor-level parity: any path, not just the ones decode_adt reads today.
SEGMENT_NAMES = st.sampled_from(["MSH", "EVN", "PID", "MRG", "PV1", "DG1", "ZZZ", "BHS", "FHS"])
NUMBERS = st.one_of(st.none(), st.integers(1, 3), st.integers(1, 3), st.integers(-1, 5))


@st.composite
def paths(draw: st.DrawFn) -> str:
    name = draw(SEGMENT_NAMES) + draw(st.sampled_from(["", "", "2"]))
    parts = [f"F{draw(st.one_of(st.integers(1, 10), st.integers(1, 10), st.integers(-2, 46)))}"]
    for prefix in "RCS":
        number = draw(NUMBERS)
        if number is None:
            break
        parts.append(f"{prefix}{number}")
    return ".".join([name, *parts])


def reader_outcome(read: Callable[[], object]) -> tuple[str, str]:
    try:
        return ("value", str(read()))
    except Exception as exc:
        return ("raised", type(exc).__name__)


def readers(text: str) -> tuple[LibraryReader, Hl7Reader] | tuple[None, None]:
    """Both readers of the text, or (None, None) once both have failed to parse it the same way."""
    try:
        library = LibraryReader(parse_message(text))
    except Exception as exc:
        with pytest.raises(type(exc)):
            read_message(text)
        return None, None
    return library, read_message(text)


@SETTINGS
@given(text=encoded(), path_list=st.lists(paths(), min_size=1, max_size=12))
def test_random_accessor_paths_read_identically(text: str, path_list: list[str]) -> None:
    library, fast = readers(text)
    if library is None:
        return
    for path in path_list:
        assert reader_outcome(lambda p=path: fast[p]) == reader_outcome(lambda p=path: library[p]), path


@SETTINGS
@given(text=encoded(), name=SEGMENT_NAMES)
def test_segments_and_raw_components_read_identically(text: str, name: str) -> None:
    library, fast = readers(text)
    if library is None:
        return

    def components(reader: object) -> object:
        segments = reader.segments(name)  # type: ignore[attr-defined]
        return [[seg.component(f, c) for f in range(6) for c in range(1, 5)] for seg in segments]

    assert reader_outcome(lambda: components(fast)) == reader_outcome(lambda: components(library))


TRICKY_FIELDS = [
    "", "a", " a ", "a~b", "a^b", "a&b", "a~b^c", "a^b&c~d", "a~~b", "~", "^", "&", "^~&", "a\\F\\b",
    "\\T\\&x^\\S\\", "a^^b&&c", "x&y~z", "\\X41\\~\\.br\\", '""',
]  # fmt: skip
GRID_MESSAGES = [
    "MSH|^~\\&|"
    + "|".join(TRICKY_FIELDS)
    + "\rPID|"
    + "|".join(TRICKY_FIELDS)
    + "\rZ^Z|1\rZ~Z|2\rPID|second\rMSHX|^|a^b|c",
    "MSH|^~\\&",  # no field after MSH-2
    "MSH|^~\\&|\rEVN\rBHS\rFHS^x|y\rMSH",  # segments without a field separator, or any separator
    with_separators("MSH|^~\\&|" + "|".join(TRICKY_FIELDS) + "\rPID|" + "|".join(TRICKY_FIELDS), "#$%^@"),
]


def grid_paths(name: str, fields: int) -> list[str]:
    numbers = [None, 1, 2, 3, -1]
    found = []
    for f in range(-3, fields + 2):
        for r, c, sub in itertools.product(numbers, repeat=3):
            parts = [f"F{f}", *(f"{p}{n}" for p, n in zip("RCS", (r, c, sub), strict=True))]
            cut = next((i for i, n in enumerate((r, c, sub), 1) if n is None), 4)
            found.append(".".join([name, *parts[:cut]]))
    return sorted(set(found))


@pytest.mark.parametrize("text", GRID_MESSAGES, ids=range(len(GRID_MESSAGES)))
def test_accessor_grid_reads_identically(text: str) -> None:
    """Every path shape over fields of every tree shape: python-hl7's tree rules, exhaustively."""
    library, fast = hl7.parse(text), parse_er7(text)
    assert fast is not None
    for name in ["MSH", "MSH2", "PID", "PID2", "EVN", "BHS", "FHS", "Z^Z", "Z~Z", "NTE"]:
        for path in grid_paths(name, len(TRICKY_FIELDS) + 3):
            assert reader_outcome(lambda p=path: fast[p]) == reader_outcome(lambda p=path: library[p]), path


@pytest.mark.parametrize("text", GRID_MESSAGES, ids=range(len(GRID_MESSAGES)))
def test_raw_component_grid_reads_identically(text: str) -> None:
    library, fast = LibraryReader(hl7.parse(text)), parse_er7(text)
    assert fast is not None
    for name in ["MSH", "MSHX", "PID", "EVN", "BHS", "FHS", "Z^Z", "NTE"]:

        def components(reader: Hl7Reader, name: str = name) -> object:
            return [
                [seg.component(f, c) for f in range(-2, len(TRICKY_FIELDS) + 3) for c in range(-2, 5)]
                for seg in reader.segments(name)
            ]

        assert reader_outcome(lambda: components(fast)) == reader_outcome(lambda: components(library)), name


def test_er7_reader_matches_documented_accessor_examples() -> None:
    # The examples in hl7.Segment.extract_field's docstring, read by both.
    text = (
        "MSH|^~\\&|APP\rPID|Field1|Component1^Component2|Component1^Sub-Component1&Sub-Component2^Component3|"
        "Repeat1~Repeat2"
    )
    fast, library = parse_er7(text), hl7.parse(text)
    assert fast is not None
    for path in [
        "PID.F3.R1.C2.S2",
        "PID.F4.R2.C1",
        "PID.F3.R1.C2",
        "PID.F4.R1.C1.S1",
        "MSH.F1",
        "MSH.F2",
        "MSH.F3",
        "PID.F1.R1.C2",
        "PID.F9",
        "PID.F9.R2",
    ]:
        assert reader_outcome(lambda p=path: fast[p]) == reader_outcome(lambda p=path: library[p]), path
    assert (fast["PID.F3.R1.C2.S2"], fast["PID.F4.R2.C1"], fast["MSH.F3"]) == ("Sub-Component2", "Repeat2", "APP")
