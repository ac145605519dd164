"""The Ops page's number filters: a figure a row does not have yet shows as a dash, never a 500."""

from __future__ import annotations

import jinja2
import pytest

from crm_notes_migration_ops.app import _templates


@pytest.mark.parametrize("missing", [None, jinja2.Undefined(name="match_pct")])
def test_missing_figures_render_as_a_dash(missing):
    filters = _templates().filters
    assert filters["pct"](missing) == "—" and filters["rate"](missing) == "—"


def test_a_rollout_row_without_final_figures_renders():
    env = _templates()
    row = env.from_string("{% for c in rows %}{{ c.match_pct|pct(2) }} {{ c.failure_rate|rate }}{% endfor %}")
    assert row.render(rows=[{"cid": 1}]) == "— —"
    assert env.filters["pct"](99.5, 2) == "99.50%" and env.filters["rate"](0.0125) == "1.25%"
