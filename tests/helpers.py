"""Side-effect-free helpers shared by test modules (conftest.py sets up the environment once;
importing it again from a test would redo that setup)."""

from __future__ import annotations

# dag.test() keeps the params of the previous run on a shared DAG object: every conf is completed with these.
PARAM_DEFAULTS = {"batch_size": 500, "include_activities": False, "dry_run": False, "force_rerun": False}


def task_states(dag_run) -> dict[str, list[str]]:
    """{task_id: [state per map index]} of a finished run."""
    out: dict[str, list[str]] = {}
    for ti in sorted(dag_run.get_task_instances(), key=lambda t: (t.task_id, t.map_index)):
        out.setdefault(ti.task_id, []).append(str(ti.state))
    return out
