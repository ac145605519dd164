"""The Ops surface of the CRM notes migration on the Airflow API server: the FastAPI app (app.py),
its authentication (auth.py), the Airflow-metadata access (airflow_runs.py) and the UI templates.

Logic and queries come from the `notes_migration` package (ops.py); nothing here
touches MongoDB, the CRM or the sanitiser at import time: heavy modules load when
a route runs. Registered by plugins/crm_notes_migration_plugin.py.
"""

URL_PREFIX = "/crm-notes-migration"
