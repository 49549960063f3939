"""The hardened service (app/) with its create taking another shape of request, for the
fault toolkit's target files of those shapes (examples/targets/query_api.toml and
form_api.toml): everything behind the route is the hardened service's own (its deadlines,
lanes, retries, door and error bodies); only where the data comes from changes.

    API_SHAPE=query  POST /users/?name=...&secret_password=...   (the seed report's signature,
                     `create_user(name: str, secret_password: str)`: query parameters)
    API_SHAPE=form   POST /users/ with a form body name=...&password=...

Serve it with `uvicorn examples.shaped_service.app:create_app --factory`. The naive twin of
each shape is `examples.naive_service.app:create_app` with the same API_SHAPE.
"""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import FastAPI, Form, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, create_model

from app import users
from app.api import request_deadline, user_response
from app.main import create_app as create_hardened_app
from app.schemas import UserCreate

# The seed's field names, with the hardened service's own bounds on each.
SeedUserCreate: type[BaseModel] = create_model(
    "SeedUserCreate", __config__=ConfigDict(extra="forbid"),
    name=(str, UserCreate.model_fields["name"]),
    secret_password=(str, UserCreate.model_fields["password"]),
)


def create_app() -> FastAPI:
    shape = os.environ.get("API_SHAPE", "query")
    if shape not in ("query", "form"):
        raise ValueError(f"API_SHAPE must be query or form, got {shape!r}")
    app = create_hardened_app()

    async def create(request: Request, name: str, password: str) -> Response:
        state = request.app.state
        created = await users.create_user(state.db, state.hasher, name, password, None,
                                          request_deadline(request))
        return user_response(created.user, status.HTTP_201_CREATED)

    if shape == "query":
        @app.post("/users/", status_code=status.HTTP_201_CREATED, tags=["users"])
        async def create_user_from_query(
                request: Request, query: Annotated[SeedUserCreate, Query()]) -> Response:
            fields = query.model_dump()
            return await create(request, fields["name"], fields["secret_password"])
    else:
        @app.post("/users/", status_code=status.HTTP_201_CREATED, tags=["users"])
        async def create_user_from_form(
                request: Request, form: Annotated[UserCreate, Form()]) -> Response:
            return await create(request, form.name, form.password)
    # Matched first: routes are tried in order, so the JSON create behind it is never reached.
    app.router.routes.insert(0, app.router.routes.pop())
    return app
