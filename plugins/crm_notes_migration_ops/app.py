"""The Ops REST API and UI page of the migration, a FastAPI app mounted by the Airflow plugin: assembly only.

The routes live in routes/ by concern (monitor: reads; operate: state changes; rollouts; ui; signoff; docs) and call the
functions of `notes_migration.ops.queries` that the CLI calls too. Every route authenticates with Airflow's JWT
(auth.py) and raises its refusals; errors.py answers them all (reason code → HTTP status, one table).

Mounted at `/crm-notes-migration` on the Airflow API server; see docs/api.md.
"""

from __future__ import annotations

from fastapi import FastAPI

from crm_notes_migration_ops import errors
from crm_notes_migration_ops.routes import docs, monitor, operate, rollouts, signoff, ui
from crm_notes_migration_ops.routes.ui import _templates  # noqa: F401  (tests/unit/test_ui_filters.py)

API_VERSION = "1.0.0"

DESCRIPTION = """
Ops surface of the `crm_notes_migration` DAG: the Monitor API of PRD §8, the
reason-coded error log, the Person→Contact coverage report and a trigger that
validates before it creates the DAG run.

**Authentication**: an Airflow JWT (`POST /auth/token` on the Airflow API
server) in `Authorization: Bearer <token>`. Read routes also accept the Airflow
UI's session cookie; `POST /api/jobs` accepts only the header. Read routes need
read access to the DAG's runs, the trigger needs the right to create them.
Anonymous or invalid token → 401; authenticated without the permission → 403.

**Errors**: every refusal answers `{"reason_code", "message", "detail", …}`; the reason code decides the
HTTP status.
"""

app = FastAPI(
    title="CRM Notes Migration — Ops API",
    version=API_VERSION,
    description=DESCRIPTION,
    # Served by authenticated routes (routes/docs.py) instead of FastAPI's anonymous defaults.
    openapi_url=None,
    docs_url=None,
    redoc_url=None,
)
for module in (monitor, operate, rollouts, ui, signoff, docs):
    app.include_router(module.router)
errors.install(app)
