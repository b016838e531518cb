"""A small inline SVG timeline of a company's licences and violations, laid out in Python.

One lane for the bureau's licences and one lane per agency with violations; each record is a
mark at its decision date, coloured by kind and severity. The template only draws the shapes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from hub.history import CompanyHistory

__all__ = ["Mark", "Timeline", "build_timeline"]

WIDTH, LEFT, RIGHT, LANE = 760, 110, 20, 28
COLOURS = {"licence": "#2e7d32", "revoked": "#b71c1c", "minor": "#9e9e9e", "ordinary": "#ef6c00",
           "serious": "#b71c1c", "hidden": "#d0d0d0"}  # fmt: skip


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    colour: str
    shape: str  # "square" for licences, "circle" for violations
    title: str


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    lanes: list[tuple[str, float]]  # label, y
    ticks: list[tuple[str, float]]  # year label, x
    marks: list[Mark]
    today_x: float


def build_timeline(history: CompanyHistory) -> Timeline:
    dates = [lic.decision_date for lic in history.licences] + [v.decision_date for v in history.violations]
    end = max([history.as_of, *dates])
    start = min(dates, default=end - dt.timedelta(days=365))
    start = min(start, end - dt.timedelta(days=365))
    span = max((end - start).days, 1)

    def x(day: dt.date) -> float:
        return round(LEFT + (WIDTH - LEFT - RIGHT) * (day - start).days / span, 1)

    agencies = sorted({v.agency for v in history.violations})
    lanes = [("许可 licences", 30.0)] + [(code, 30.0 + LANE * (i + 1)) for i, code in enumerate(agencies)]
    lane_y = dict(lanes)
    marks = [
        Mark(x(lic.decision_date), 30.0, COLOURS["revoked" if lic.lifecycle == "revoked" else "licence"], "square",
             f"{lic.decision_date} {lic.decision_no} ({lic.lifecycle})")
        for lic in history.licences
    ]  # fmt: skip
    for v in history.violations:
        colour = COLOURS.get(v.severity, "#555") if v.standing == "counts" else COLOURS["hidden"]
        marks.append(Mark(x(v.decision_date), lane_y[v.agency], colour, "circle",
                          f"{v.decision_date} {v.agency} {v.severity} {'、'.join(v.penalty_types)} [{v.standing}]"))  # fmt: skip
    ticks = [(str(year), x(dt.date(year, 1, 1))) for year in range(start.year + 1, end.year + 1)]
    height = int(30 + LANE * len(lanes) + 10)
    return Timeline(WIDTH, height, lanes, ticks, marks, x(history.as_of))
