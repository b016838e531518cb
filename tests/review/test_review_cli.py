"""`hub check` and `hub tokens add` as a user runs them (real subprocess)."""

from __future__ import annotations

import json
import os

from tests.helpers import run_hub


def _env(hub) -> dict:
    s = hub.runtime.settings
    return {**os.environ, "HUB_DATA_DIR": str(s.data_dir), "HUB_DATABASE_URL": s.resolved_database_url,
            "HUB_API_TOKENS_FILE": str(s.api_tokens_file), "HUB_FRESHNESS_HOURS": "24"}  # fmt: skip


def test_hub_check_prints_the_verdict_names_the_stale_agency_and_stores_the_check(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled(never=("JJZD",))
    hub.violation(uscc, "GSJ", "G-1", severity="ordinary")
    text = run_hub("check", uscc, "--case", "SP-9", env=_env(hub))
    assert text.returncode == 0, text.stderr
    assert "case SP-9: AMBER" in text.stdout and "JJZD   STALE" in text.stdout and "ordinary-violation" in text.stdout
    as_json = json.loads(run_hub("check", uscc, "--case", "SP-10", "--json", env=_env(hub)).stdout)
    assert (as_json["verdict"], as_json["stale_agencies"], as_json["case_id"]) == ("AMBER", ["JJZD"], "SP-10")
    assert as_json["check_id"] == 2  # both checks were stored


def test_hub_check_needs_a_case_and_a_known_company(hub, uscc):
    assert run_hub("check", uscc, env=_env(hub)).returncode != 0
    missing = run_hub("check", uscc, "--case", "SP-1", env=_env(hub))
    assert missing.returncode == 1 and "no company" in missing.stderr


def test_hub_tokens_add_prints_the_token_once_and_stores_its_hash(hub, tmp_path):
    out = run_hub("tokens", "add", "li.ming", "--role", "regulator", "--agency", "xfzd",
                  "--file", str(tmp_path / "t.json"), env=_env(hub))  # fmt: skip
    token = json.loads(out.stdout)["token"]
    stored = (tmp_path / "t.json").read_text()
    assert token not in stored and '"agency": "XFZD"' in stored
    refused = run_hub("tokens", "add", "x", "--role", "reviewer", "--agency", "SCJG", "--file",
                      str(tmp_path / "t.json"), env=_env(hub))  # fmt: skip
    assert refused.returncode == 1 and "regulator" in refused.stderr


def test_hub_history_narrows_by_agency_severity_and_period_and_refuses_a_bad_filter(hub, uscc):
    import datetime as dt

    hub.grant(1, XK_XDR_SHXYM=uscc)
    today = dt.date.today()
    hub.violation(uscc, "GSJ", "G-1", severity="ordinary")
    hub.violation(uscc, "SCJG", "S-1", severity="serious", penalties=("责令停产停业",))
    hub.violation(uscc, "SCJG", "S-2", severity="ordinary", decided=today - dt.timedelta(days=200))
    hub.violation(uscc, "SCJG", "S-3", severity="minor", penalties=("警告",), decided=today - dt.timedelta(days=400))

    def shown(*options: str) -> set[str]:
        out = run_hub("history", uscc, "--json", *options, env=_env(hub))
        assert out.returncode == 0, out.stderr
        return {v["decision_no"] for v in json.loads(out.stdout)["violations"]}

    everything = shown()
    assert len(everything) == 3 and not any("S-3" in d for d in everything)  # minor, past its 3 months
    assert shown("--all") == everything | {f"SCJG罚〔{(today - dt.timedelta(days=400)).year}〕S-3号"}
    assert shown("--agency", "scjg") == {d for d in everything if d.startswith("SCJG")}
    assert shown("--severity", "serious") == {d for d in everything if "S-1" in d}
    since = (today - dt.timedelta(days=100)).isoformat()
    assert shown("--since", since) == {d for d in everything if "S-2" not in d}
    assert shown("--until", since) == {d for d in everything if "S-2" in d}
    text = run_hub("history", uscc, "--agency", "GSJ", env=_env(hub))
    assert "violations (1)" in text.stdout and "GSJ" in text.stdout
    assert "1 repaired or expired not shown" in run_hub("history", uscc, env=_env(hub)).stdout
    bad = run_hub("history", uscc, "--severity", "grave", env=_env(hub))
    assert bad.returncode != 0 and "grave" in bad.stderr and "serious" in bad.stderr
    backwards = run_hub("history", uscc, "--since", "2026-05-01", "--until", "2026-01-01", env=_env(hub))
    assert backwards.returncode != 0 and "after" in backwards.stderr


def test_a_token_revoked_or_replaced_is_refused_by_the_running_server_at_once(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    with hub.client() as client:  # one app for the whole test: no restart in between
        def status(who_token: str) -> int:
            headers = {"Authorization": f"Bearer {who_token}"}
            return client.get(f"/api/v1/companies/{uscc}/history", headers=headers).status_code

        reviewer = hub.tokens["reviewer"]
        assert status(reviewer) == 200
        assert run_hub("tokens", "revoke", "reviewer", env=_env(hub)).stdout.strip() == "revoked: reviewer"
        assert status(reviewer) == 401
        assert client.post("/login", data={"token": reviewer}, follow_redirects=False).status_code == 401

        old_auditor = hub.tokens["auditor"]
        new_auditor = json.loads(run_hub("tokens", "add", "auditor", "--role", "auditor", env=_env(hub)).stdout)["token"]
        assert (status(old_auditor), status(new_auditor)) == (401, 200)

    again = run_hub("tokens", "revoke", "reviewer", env=_env(hub))
    assert again.returncode == 1 and "no token named 'reviewer'" in again.stderr
