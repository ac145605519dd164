"""Every route of the plugin app needs Airflow's JWT; the trigger takes it only from the Authorization header."""

from __future__ import annotations

import datetime as dt
import re

import jwt
import pytest

from tests.plugin.plugin_support import JWT_SECRET, NOT_STARTED

PREFIX = "/crm-notes-migration"
PUBLIC = {f"{PREFIX}/static/purify.min.js"}  # the only route without a token: DOMPurify's own release file
SAMPLE_PARAMS = {"cid": str(NOT_STARTED), "company_sso_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "contact_id": "c-1"}


def plugin_routes(api_app) -> list[tuple[str, str]]:
    """(method, url) of every route of the mounted plugin app, found from the app itself (new routes included)."""
    from starlette.routing import Mount

    from crm_notes_migration_ops.app import app as plugin_app

    mounts = [r for r in api_app.routes if isinstance(r, Mount) and r.app is plugin_app]
    assert [m.path for m in mounts] == [PREFIX], "the plugin app is mounted once, at /crm-notes-migration"
    out = []
    for route in plugin_app.routes:
        path = re.sub(r"\{job_id\}", "00000000-0000-0000-0000-000000000000", route.path)
        query = "?" + "&".join(f"{k}={v}" for k, v in SAMPLE_PARAMS.items())
        for method in sorted(getattr(route, "methods", None) or {"GET"}):
            if method != "HEAD":
                out.append((method, f"{PREFIX}{path}{query}"))
    return out


def test_the_plugin_registers_the_app_and_a_relative_nav_entry(api_app):
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not {k: v for k, v in errors.items() if "crm_notes_migration" in k}
    ours = [p for p in plugins if p.name == "crm_notes_migration"]
    assert len(ours) == 1
    view = ours[0].external_views[0]
    assert view["name"] == "CRM Notes Migration" and view["destination"] == "nav"
    assert not view["href"].startswith(("/", "http")), "relative href: resolved against Airflow's base URL"
    assert view["href"] == "crm-notes-migration/ui"
    assert ours[0].fastapi_apps[0]["url_prefix"] == PREFIX


def test_the_route_list_covers_the_whole_surface(api_app):
    paths = {url.split("?")[0] for _m, url in plugin_routes(api_app)}
    assert {
        f"{PREFIX}/api/status",
        f"{PREFIX}/api/jobs",
        f"{PREFIX}/api/coverage",
        f"{PREFIX}/ui",
        f"{PREFIX}/openapi.json",
        f"{PREFIX}/docs",
        f"{PREFIX}/",
    } <= paths


def test_anonymous_requests_get_401_on_every_route(api_app, client):
    routes = plugin_routes(api_app)
    assert len(routes) >= 9
    for method, url in routes:
        resp = client.request(method, url, json={} if method == "POST" else None)
        if url.startswith(tuple(PUBLIC)):
            assert resp.status_code == 200, url  # a published library's file: no data, served to the login page too
            continue
        assert resp.status_code == 401, (method, url, resp.status_code, resp.text[:200])
        assert resp.headers.get("www-authenticate") == "Bearer", (method, url)


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c"])
def test_garbage_tokens_get_401(client, token):
    for headers in ({"Authorization": f"Bearer {token}"}, {"Cookie": f"_token={token}"}):
        assert client.get(f"{PREFIX}/api/status?cid={NOT_STARTED}", headers=headers).status_code == 401


def test_a_token_signed_with_another_secret_or_expired_gets_401(client, ops_token):
    claims = jwt.decode(ops_token, options={"verify_signature": False})
    forged = jwt.encode(claims, JWT_SECRET + "-other", algorithm="HS512")
    expired = jwt.encode(
        {**claims, "exp": int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).timestamp())},
        JWT_SECRET,
        algorithm="HS512",
    )
    for token, detail in ((forged, "Invalid token"), (expired, "Token expired")):
        resp = client.get(f"{PREFIX}/api/status?cid={NOT_STARTED}", headers={"Authorization": f"Bearer {token}"})
        assert (resp.status_code, resp.json()["detail"]) == (401, detail)


def test_read_routes_accept_the_bearer_header_or_the_ui_cookie(client, ops_token, viewer_token, seed_cid):
    from devtools.seed import SeedSpec

    seed_cid(SeedSpec(cid=NOT_STARTED, notes=20))
    for headers in ({"Authorization": f"Bearer {ops_token}"}, {"Cookie": f"_token={viewer_token}"}):
        resp = client.get(f"{PREFIX}/api/status?cid={NOT_STARTED}", headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"cid": NOT_STARTED, "status": "not_started"}


def test_the_trigger_refuses_the_cookie_even_when_it_is_valid(client, ops_token):
    """A cross-site form post carries the cookie, never the header: the cookie alone is anonymous here."""
    body = {"cid": NOT_STARTED, "company_sso_id": SAMPLE_PARAMS["company_sso_id"]}
    resp = client.post(f"{PREFIX}/api/jobs", json=body, headers={"Cookie": f"_token={ops_token}"})
    assert resp.status_code == 401
    assert resp.json()["detail"] == "Not authenticated"


def test_a_viewer_may_read_but_not_trigger(client, viewer_token):
    headers = {"Authorization": f"Bearer {viewer_token}"}
    assert client.get(f"{PREFIX}/api/jobs", headers=headers).status_code == 200
    body = {"cid": NOT_STARTED, "company_sso_id": SAMPLE_PARAMS["company_sso_id"]}
    resp = client.post(f"{PREFIX}/api/jobs", json=body, headers=headers)
    assert resp.status_code == 403
    assert "may not trigger" in resp.json()["detail"]


def test_openapi_documents_every_endpoint_behind_auth(client, auth):
    spec = client.get(f"{PREFIX}/openapi.json", headers=auth).json()
    assert spec["servers"] == [{"url": PREFIX}]
    assert set(spec["paths"]) >= {"/api/status", "/api/jobs", "/api/jobs/{job_id}/errors", "/api/coverage"}
    post = spec["paths"]["/api/jobs"]["post"]
    assert {"202", "403", "404", "409", "422"} <= set(post["responses"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    # the trigger documents the header scheme only; read routes document the cookie as well
    assert post["security"] == [{"HTTPBearer": []}]
    assert {"APIKeyCookie": []} in spec["paths"]["/api/status"]["get"]["security"]
