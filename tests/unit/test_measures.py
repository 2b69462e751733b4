"""The measures' pure layer: periods on the facility clock, rates and medians, definitions from
settings, SVG charts and CSV."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime
from xml.etree import ElementTree
from zoneinfo import ZoneInfo

import pytest

from app.measures.arithmetic import days, median, meets, rate
from app.measures.charts import RoleLoad, chart_for, overdue_chart, rate_chart
from app.measures.csv_export import measures_csv, patients_csv
from app.measures.definitions import DAY_S, HOUR_S, Anchor, Kind, by_key, definitions
from app.measures.filters import FilterError, MeasureFilter, default_period, period_instants
from app.measures.results import MeasurePatient, MeasureResult
from app.settings import MeasureSettings

NY = ZoneInfo("America/New_York")
SVG = "{http://www.w3.org/2000/svg}"


def test_rate_is_none_without_a_denominator_and_refuses_nonsense() -> None:
    assert rate(0, 0) is None
    assert rate(0, 4) == 0.0
    assert rate(3, 4) == 0.75
    with pytest.raises(ValueError):
        rate(5, 4)
    with pytest.raises(ValueError):
        rate(-1, 4)


def test_median_odd_even_and_empty() -> None:
    assert median([]) is None
    assert median([5.0]) == 5.0
    assert median([9, 1, 5]) == 5.0
    assert median([4, 1, 3, 2]) == 2.5
    assert days(3 * 86_400) == 3.0


def test_meets_target() -> None:
    assert meets(0.5, 0.5) is True
    assert meets(0.49, 0.5) is False
    assert meets(None, 0.5) is None and meets(0.7, None) is None


def test_period_is_local_midnight_to_midnight_after_the_last_day() -> None:
    p = period_instants(MeasureFilter(date(2026, 11, 1), date(2026, 11, 30)), NY)
    # 1 November 2026 is the day DST ends in New York: midnight is still EDT (-4), the end is EST (-5).
    assert p.start.astimezone(UTC) == datetime(2026, 11, 1, 4, 0, tzinfo=UTC)
    assert p.end.astimezone(UTC) == datetime(2026, 12, 1, 5, 0, tzinfo=UTC)
    one_day = period_instants(MeasureFilter(date(2026, 3, 8), date(2026, 3, 8)), NY)
    assert (one_day.end - one_day.start).total_seconds() == 23 * HOUR_S  # spring forward


def test_filter_checks_name_the_offending_field() -> None:
    MeasureFilter(date(2026, 1, 1), date(2026, 1, 1)).check(1)
    with pytest.raises(FilterError) as backwards:
        MeasureFilter(date(2026, 2, 1), date(2026, 1, 1)).check()
    assert backwards.value.field == "period_end"
    with pytest.raises(FilterError) as too_long:
        MeasureFilter(date(2026, 1, 1), date(2026, 1, 31)).check(30)
    assert too_long.value.field == "period_end"
    with pytest.raises(FilterError) as blank:
        MeasureFilter(date(2026, 1, 1), date(2026, 1, 2), team=" ").check()
    assert blank.value.field == "team"
    assert default_period(date(2026, 11, 24), 30) == (date(2026, 10, 26), date(2026, 11, 24))


def test_definitions_take_windows_and_targets_from_settings() -> None:
    defs = by_key(definitions(MeasureSettings()))
    contact = defs["post-discharge-contact-7d"]
    assert (contact.kind, contact.anchor, contact.window_s, contact.target) == (
        Kind.WORK_WITHIN,
        Anchor.DISCHARGE,
        7 * DAY_S,
        0.5,
    )
    assert defs["medication-reconciliation-72h"].window_s == 72 * HOUR_S
    assert defs["medication-reconciliation-72h"].target is None
    assert [k for k in defs if k.startswith("fuh-")] == ["fuh-7d", "fuh-30d"]
    assert defs["admission-notification-timeliness"].anchor is Anchor.ADMIT
    assert defs["bh-referral-loop-closure"].anchor is Anchor.RAISED
    assert defs["overdue-tasks"].unit == "tasks"

    custom = by_key(definitions(MeasureSettings(contact_days=3, fuh_days=[7], targets={"screening-reach": 0.25})))
    assert custom["post-discharge-contact-7d"].window_s == 3 * DAY_S
    assert "3 days" in custom["post-discharge-contact-7d"].title
    assert custom["post-discharge-contact-7d"].target is None
    assert custom["screening-reach"].target == 0.25
    assert "fuh-30d" not in custom


def _svg(text: str) -> ElementTree.Element:
    root = ElementTree.fromstring(text)  # noqa: S314 - our own output, not untrusted input
    assert root.get("role") == "img"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and desc is not None
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    return root


def test_rate_chart_is_an_accessible_image_with_the_numbers_and_a_target_line() -> None:
    root = _svg(rate_chart("Contact <7 days>", 3, 8, 0.375, 0.5, numerator_label="contacted", chart_id="c1"))
    desc = root.find(f"{SVG}desc").text  # type: ignore[union-attr]
    assert desc == "Contact <7 days>: 37.5% (3 contacted of 8 denominator); target 50.0%, not met."
    assert root.find(f"{SVG}title").text == "Contact <7 days>"  # type: ignore[union-attr]
    [target] = root.findall(f"{SVG}line")
    assert target.get("x1") == f"{8 + 464 * 0.5:.1f}"
    bars = root.findall(f"{SVG}rect")
    assert [b.get("width") for b in bars] == ["464", f"{464 * 0.375:.1f}"]
    assert bars[1].get("fill") == "#b3261e"  # below target


def test_rate_chart_without_data_or_target() -> None:
    root = _svg(rate_chart("Med rec", 0, 0, None, None, chart_id="c2"))
    assert root.find(f"{SVG}desc").text == "Med rec: no data (0 numerator of 0 denominator)."  # type: ignore[union-attr]
    assert root.findall(f"{SVG}line") == []
    assert len(root.findall(f"{SVG}rect")) == 1  # the track only


def test_overdue_chart_lists_every_role_in_its_description() -> None:
    rows = [RoleLoad("BHCF", 4, 1, 2), RoleLoad("PMC", 10, 0, 5)]
    root = _svg(overdue_chart("Overdue tasks by role", rows, chart_id="o"))
    assert root.find(f"{SVG}desc").text == (  # type: ignore[union-attr]
        "Overdue tasks by role. BHCF: 2 overdue, 1 due soon, 4 open; PMC: 5 overdue, 0 due soon, 10 open."
    )
    labels = [t.text for t in root.findall(f"{SVG}text")]
    assert "BHCF" in labels and "5 / 10" in labels


def _result(**overrides: object) -> MeasureResult:
    values: dict[str, object] = dict(
        key="post-discharge-contact-7d",
        title="Contact within 7 days of discharge",
        description="d",
        unit="rate",
        numerator=1,
        denominator=2,
        rate=0.5,
        target=0.5,
        numerator_label="completed within 7 days",
        denominator_label="discharges",
        source="seed 003",
        extras={"pending": 1, "window_days": 7.0},
    )
    values.update(overrides)
    return MeasureResult(**values)  # type: ignore[arg-type]


def test_chart_for_picks_the_chart_of_the_measure() -> None:
    assert 'id="chart-post-discharge-contact-7d-title"' in chart_for(_result())
    overdue = _result(
        key="overdue-tasks", unit="tasks", extras={"by_role": [{"role": "RN", "open": 2, "due_soon": 0, "overdue": 1}]}
    )
    assert "RN: 1 overdue, 0 due soon, 2 open" in chart_for(overdue)


def test_measures_csv_has_one_row_per_measure_and_neutralises_formulas() -> None:
    text = measures_csv(
        [_result(), _result(key="x", rate=None, target=None)],
        MeasureFilter(date(2026, 11, 1), date(2026, 11, 30), team="=HYPERLINK(1)"),
    )
    assert text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:4] == ["key", "title", "numerator", "denominator"]
    assert rows[1][:7] == [
        "post-discharge-contact-7d",
        "Contact within 7 days of discharge",
        "1",
        "2",
        "0.5000",
        "0.5000",
        "true",
    ]
    assert rows[1][9] == "'=HYPERLINK(1)"
    assert rows[1][11] == "pending=1; window_days=7.0"
    assert rows[2][4:7] == ["", "", ""]


def test_patients_csv_lists_ids_space_separated() -> None:
    pid, t1, t2, e1 = (uuid.uuid4() for _ in range(4))
    text = patients_csv([MeasurePatient(pid, "-Jane", "Doe", date(1970, 4, 12), (t1, t2), (e1,))])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == [str(pid), "Doe", "'-Jane", "1970-04-12", f"{t1} {t2}", str(e1)]
