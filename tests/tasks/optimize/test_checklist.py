"""The pre-implementation checklist (seed 7.3.9)."""

from __future__ import annotations

import pytest

from tasks.optimize.checklist import CHECKLIST_ITEMS, ChecklistFailed, check_checklist


def test_checklist_stops_on_first_missing_item() -> None:
    facts = {name: (True, "ok") for name in CHECKLIST_ITEMS}
    assert len(check_checklist(facts)) == len(CHECKLIST_ITEMS)
    facts["rollback prepared"] = (False, "no previous champion artifact recorded")
    with pytest.raises(ChecklistFailed, match="'rollback prepared' is not met: no previous champion"):
        check_checklist(facts)
