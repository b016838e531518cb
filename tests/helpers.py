"""Small builders for test data (valid USCCs, grants) shared by several test modules."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from contracts.uscc import org_check_char, uscc_check_char

REPO = Path(__file__).resolve().parent.parent
BUREAU = "天津市南开区行政审批局"
BUREAU_USCC = "11120104MB01234578"


def make_uscc(seed: int, prefix: str = "91120104") -> str:
    rng = random.Random(seed)
    org8 = "".join(rng.choice("0123456789") for _ in range(8))
    body = prefix + org8 + org_check_char(org8)
    return body + uscc_check_char(body)


def grant(n: int, **overrides) -> dict:
    """A valid licence grant record keyed by 双公示 codes."""
    record = {
        "XK_XDR_MC": f"天津测试{n}号有限公司",
        "XK_XDR_LB": "法人及非法人组织",
        "XK_XDR_SHXYM": make_uscc(n),
        "XK_FRDB": "张三",
        "XK_XKWS": "食品经营许可决定书",
        "XK_WSH": f"津南审批许字〔2026〕T{n:05d}号",
        "XK_XKLB": "普通",
        "XK_XKZS": "食品经营许可证",
        "XK_XKBH": f"JY{n:08d}",
        "XK_NR": "热食类食品制售",
        "XK_JDRQ": "2026-03-01",
        "XK_YXQZ": "2026-03-01",
        "XK_YXQZI": "2031-02-28",
        "XK_XKJG": BUREAU,
        "XK_XKJGDM": BUREAU_USCC,
        "XK_LYDW": BUREAU,
        "XK_LYDWDM": BUREAU_USCC,
        "approval_item": "NK-SC-001",
        "approval_item_name": "食品经营许可",
        "bureau_section": "市场准入科",
        "industry": "餐饮",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def run_hub(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real `hub` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
