"""Constants shared by the trust tests (tests/certs is on sys.path under pytest's default import mode)."""

import datetime as dt

PARTIES = [("SCJG", "天津市南开区市场监督管理局"), ("SWJ", "国家税务总局天津市南开区税务局"), ("REG", "区监管专班")]
T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
