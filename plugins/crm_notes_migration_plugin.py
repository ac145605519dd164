"""Airflow plugin registration of the CRM notes migration's Ops surface (package: crm_notes_migration_ops/).

* `fastapi_apps`: the Ops REST API and page, mounted on the API server at
  `/crm-notes-migration` (every route checks Airflow's JWT itself).
* `external_views`: the nav entry "CRM Notes Migration", an iframe of the page.
  Its `href` is relative (no leading slash): the Airflow UI resolves it against
  its `<base href>`, so it works when Airflow is served under a base URL path.

plugins/.airflowignore keeps Airflow from loading the package's modules as plugin files of their own.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from crm_notes_migration_ops import URL_PREFIX
from crm_notes_migration_ops.app import app


class CrmNotesMigrationPlugin(AirflowPlugin):
    name = "crm_notes_migration"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "CRM Notes Migration API"}]
    external_views = [
        {
            "name": "CRM Notes Migration",
            "href": f"{URL_PREFIX.lstrip('/')}/ui",
            "url_route": "crm-notes-migration",
            "destination": "nav",
            "nav_top_level": True,  # its own entry in the left navigation rail, not inside a menu
        }
    ]
