"""One declaration per API operation: its Flask route, its query parameters and its OpenAPI entry.

An `Operation` (see operations.py for the table) is the only place a route of /api/v1 is written:
`route()` registers the view it names on the blueprint and parses the declared query parameters for
it, and `Operation.openapi()` is its part of the published document, so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, request

from cvunet_matting.errors import ErrorCode, InputError
from cvunet_matting.webapp.errors import ERROR_STATUSES

from .schemas import json_response, ref, string

PREFIX = "/api/v1"
ID = {"name": "id", "in": "path", "required": True, "schema": string(format="uuid")}
_PATH_PARAMETER = re.compile(r"<(?:\w+:)?\w+>")  # <task_id>, <batch_id:batch_id>


@dataclass(frozen=True)
class NumberQuery:
    """A number from 0 to `maximum`, whole unless `kind` is float; `default` when absent (or empty,
    for a float; None: not given), a 400 when anything else."""

    name: str
    default: float | None
    maximum: float
    kind: type = int
    description: str = ""

    def parse(self, raw: str | None) -> Any:
        """The value as `kind` (an int or a float): 400 `bad_request` outside 0..maximum."""
        if raw is None or (raw == "" and self.kind is float):
            return self.default
        value = self._number(raw)
        if value is None or not 0 <= value <= self.maximum:  # NaN fails this too
            noun, top = ("an integer", self.maximum) if self.kind is int else ("a number", f"{self.maximum:g}")
            raise InputError(f"{self.name} must be {noun} from 0 to {top}", code=ErrorCode.BAD_REQUEST)
        return value

    def _number(self, raw: str) -> float | None:
        if self.kind is int:
            return int(raw) if raw.isascii() and raw.isdigit() else None
        try:
            return float(raw)
        except ValueError:
            return None

    def openapi(self) -> dict:
        schema = {"type": "integer" if self.kind is int else "number", "minimum": 0, "maximum": self.maximum}
        entry = {"name": self.name, "in": "query", "schema": schema}
        return {**entry, "description": self.description} if self.description else entry


@dataclass(frozen=True)
class FlagQuery:
    """A switch: true for 1, true or yes; any other value (or none) is false, never an error."""

    name: str
    description: str

    def parse(self, raw: str | None) -> bool:
        return raw in {"1", "true", "yes"}

    def openapi(self) -> dict:
        return {"name": self.name, "in": "query", "schema": string(enum=["1"]), "description": self.description}


@dataclass(frozen=True)
class ChoiceQuery:
    """One of `choices`, or None when absent; a 400 naming the choices for anything else, an empty value
    too (the published enum has no "": schemathesis sends `state=` and rightly expects a refusal)."""

    name: str
    choices: tuple[str, ...]
    description: str

    def parse(self, raw: str | None) -> str | None:
        if raw is None:
            return None
        if raw not in self.choices:
            raise InputError(f"{self.name} must be one of {', '.join(self.choices)}", code=ErrorCode.BAD_REQUEST)
        return raw

    def openapi(self) -> dict:
        schema = string(enum=list(self.choices))
        return {"name": self.name, "in": "query", "schema": schema, "description": self.description}


@dataclass(frozen=True)
class Operation:
    """One method on one route under PREFIX, as served and as published."""

    method: str
    rule: str  # a Flask rule below PREFIX; its one path parameter is published as {id}
    summary: str
    ok: tuple[int, dict]  # the success status and its response
    errors: tuple[int, ...] = ()  # statuses from webapp/errors.py ERROR_STATUSES
    body: dict | None = None
    query: tuple[NumberQuery | FlagQuery | ChoiceQuery, ...] = ()
    public: bool = False  # served without a token even when API tokens are enabled
    also: tuple[tuple[int, dict], ...] = ()  # other success statuses, e.g. 200 when ?wait= saw the end

    @property
    def path(self) -> str:
        return PREFIX + _PATH_PARAMETER.sub("{id}", self.rule)

    def openapi(self) -> dict:
        responses = {str(status): response for status, response in (self.ok, *self.also)}
        responses |= {str(s): json_response(ERROR_STATUSES[s][0], ref("Error")) for s in self.errors}
        entry = {"summary": self.summary, "responses": responses}
        parameters = ([ID] if "{id}" in self.path else []) + [q.openapi() for q in self.query]
        if parameters:
            entry["parameters"] = parameters
        if self.body:
            entry["requestBody"] = self.body
        if self.public:
            entry["security"] = []
        return entry


def router(bp: Blueprint, operations: dict[str, Operation]):
    """A decorator that serves a view on the operation declared under the view's name.

    The declared query parameters are parsed before the view runs and passed to it by name; a view
    without a declaration fails at import.
    """

    def route(view):
        operation = operations[view.__name__]

        @functools.wraps(view)
        def with_query(**path):
            query = {q.name: q.parse(request.args.get(q.name)) for q in operation.query}
            return view(**path, **query)

        bp.add_url_rule(operation.rule, view.__name__, with_query, methods=[operation.method])
        return view

    return route
