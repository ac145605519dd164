"""Authentication of the Ops API: Airflow's own JWT, checked through the configured auth manager.

Airflow does not authenticate plugin apps, so every route validates the token
itself and asks the auth manager whether the user may read (GET) or trigger
(POST) runs of the migration DAG:

* read routes take the token from `Authorization: Bearer …` or, inside the
  Airflow UI, from its `_token` session cookie;
* state-changing routes take it only from the `Authorization` header, so a
  page on another site cannot make a logged-in browser trigger a run.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from notes_migration.domain.config import DAG_ID

COOKIE_NAME = "_token"  # airflow.api_fastapi.auth.managers.base_auth_manager.COOKIE_NAME_JWT_TOKEN

bearer_scheme = HTTPBearer(auto_error=False, description="An Airflow JWT, from `POST /auth/token`.")
cookie_scheme = APIKeyCookie(
    name=COOKIE_NAME, auto_error=False, description="The Airflow UI session cookie (read routes only)."
)


class Refusal(BaseModel):
    """A request the API refused (errors.py): its reason code and a human-readable message (also as `detail`)."""

    reason_code: str
    message: str
    detail: Any


UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: {"model": Refusal, "description": "No, an invalid or an expired Airflow JWT."},
    403: {"model": Refusal, "description": "The user may not access runs of the DAG."},
}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def _user_from_token(token: str | None) -> Any:
    """Validate the JWT with Airflow's auth manager (signature, expiry, audience, revocation)."""
    if not token:
        raise _unauthorized("Not authenticated")
    from airflow.api_fastapi.app import get_auth_manager
    from jwt import ExpiredSignatureError, InvalidTokenError

    try:
        return await get_auth_manager().get_user_from_token(token)
    except ExpiredSignatureError:
        raise _unauthorized("Token expired") from None
    except InvalidTokenError:
        raise _unauthorized("Invalid token") from None


def _authorize(user: Any, method: Literal["GET", "POST"]) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    allowed = get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity.RUN, details=DagDetails(id=DAG_ID), user=user
    )
    if not allowed:
        action = "read" if method == "GET" else "trigger"
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"user may not {action} runs of DAG {DAG_ID}")


def _bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else None


async def reader(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie_token: Annotated[str | None, Depends(cookie_scheme)],
) -> Any:
    """Read routes: the Bearer header wins; inside the Airflow UI the session cookie is used."""
    user = await _user_from_token(_bearer_token(credentials) or cookie_token)
    _authorize(user, "GET")
    return user


async def operator(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Any:
    """State-changing routes: the Bearer header only, never the cookie (no cross-site forgery)."""
    user = await _user_from_token(_bearer_token(credentials))
    _authorize(user, "POST")
    return user


Reader = Annotated[Any, Depends(reader)]
Operator = Annotated[Any, Depends(operator)]
