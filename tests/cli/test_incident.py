"""`inferops incident`: a person's steps from the shell, a step out of order refused with exit 2 and the next step
named, and the figures of what was recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner


@pytest.fixture()
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    monkeypatch.setenv("INFEROPS_INCIDENTS_DB", url)
    return url


def run(*args: str) -> tuple[int, str]:
    from cli import app

    done = CliRunner().invoke(app, ["incident", *args])
    return done.exit_code, " ".join(done.output.split())


def test_a_person_takes_an_incident_from_open_to_post_mortem(database: str) -> None:
    code, out = run("open", "replica killed, requests failing", "--level", "L3", "--by", "dana")
    assert code == 0 and "respond within 15 min (emergency)" in out, out
    number = re.search(r"incident (\d+) opened", out).group(1)  # type: ignore[union-attr]
    code, out = run("resolve", number, "--by", "dana")
    assert code == 2 and "it cannot go to 'resolved'; the next step is 'responding'" in out, out
    for step in ("ack", "locate", "mitigate", "resolve", "recover"):
        code, out = run(step, number, "--by", "dana")
        assert code == 0, out
    code, out = run("postmortem", number, "--by", "dana", "--note", "docs/postmortems/1.md")
    assert code == 0 and "is postmortem; closed" in out
    code, out = run("show", number)
    assert code == 0 and "docs/postmortems/1.md" in out and "state: postmortem; closed" in out
    code, out = run("list")
    assert code == 0 and "1 incident(s) in 30.0 days, 1 resolved" in out and "MTTR 0.0 min (meets" in out
    assert run("ack", "99")[0] == 2 and "does not exist" in run("ack", "99")[1]
