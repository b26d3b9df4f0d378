"""The OpenAPI 3.0 description of /api/v1, built here so it stays next to the code it describes."""

from __future__ import annotations

from functools import cache

from . import __version__
from .encoding import FLAG_WORDS, FORMAT_WORDS

IMAGE_TYPES = ("image/png", "image/webp", "image/jpeg")
INPUT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif")
STATES = ["pending", "started", "retry", "success", "failure"]
ERRORS = {
    400: "Bad input: the `code` says what (bad_id, bad_option, no_file, empty, truncated...)",
    401: "API tokens are enabled and no valid bearer token was sent",
    403: "The folder lies outside the allowed roots",
    404: "Unknown id, or the file is not ready (code `not_ready`) or the task failed (code `failed`)",
    409: "Only failed tasks can be retried",
    413: "The upload is over the size limit (code `too_large`)",
    415: "Not a supported raster image (codes `svg`, `not_an_image`, `unsupported_format`)",
    503: "Redis or PostgreSQL cannot be reached",
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**extra) -> dict:
    return {"type": "string", **extra}


def nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


RETRY_AFTER = {
    "Retry-After": {
        "description": (
            "present while the work is unfinished: seconds to wait before polling again. For a task it "
            "is half its expected remaining wait (from the queue ahead and the recent pace), 1 to 10"
        ),
        "schema": {"type": "integer"},
    }
}


def json_response(description: str, schema: dict, polled: bool = False) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {**response, "headers": RETRY_AFTER} if polled else response


def binary_response(description: str, types) -> dict:
    return {"description": description, "content": {t: {"schema": string(format="binary")} for t in types}}


def operation(summary: str, ok: tuple[int, dict], errors: list[int], **extra) -> dict:
    responses = {str(ok[0]): ok[1]}
    responses.update({str(code): json_response(ERRORS[code], ref("Error")) for code in errors})
    return {"summary": summary, "responses": responses, **extra}


ID = {"name": "id", "in": "path", "required": True, "schema": string(format="uuid")}
FORM_OPTIONS = {
    "format": string(enum=list(FORMAT_WORDS), description="output format: png (the default), webp or jpg"),
    "bg_color": string(description="flatten on this colour: '#RRGGBB', 'r,g,b' or a name; empty: keep alpha"),
    "alpha_only": string(enum=list(FLAG_WORDS), description="true: return the alpha matte only (grey PNG)"),
}

SCHEMAS = {
    "Error": obj(
        ["error"],
        error=obj(
            ["code", "message"],
            code=string(),
            message=string(),
            state=string(enum=STATES + ["running", "finalizing", "done"]),
            refused={"type": "array", "items": ref("Refused")},
        ),
    ),
    "Refused": obj(["filename", "code", "message"], filename=string(), code=string(), message=string()),
    "Options": {
        "type": "object",
        "properties": {
            "format": nullable(FORM_OPTIONS["format"]),
            "bg_color": nullable(FORM_OPTIONS["bg_color"]),
            "alpha_only": {"type": "boolean"},
        },
    },
    "FolderRequest": obj(
        ["folder"],
        folder=string(minLength=1, description="a folder under CVUNET_ALLOWED_ROOTS (relative: under the first)"),
        options=ref("Options"),
    ),
    "TaskAccepted": obj(
        ["task_id", "status_url"], task_id=string(format="uuid"), status_url=string(), view_url=string()
    ),
    "BatchAccepted": obj(
        ["batch_id", "status_url", "total"],
        batch_id=string(format="uuid"),
        status_url=string(),
        view_url=string(),
        total={"type": "integer", "minimum": 0},
        refused={"type": "array", "items": ref("Refused")},
    ),
    "Item": obj(
        ["task_id", "filename", "state", "error", "status_url"],
        task_id=string(format="uuid"),
        filename=string(),
        state=string(enum=STATES),
        error=nullable(string()),
        status_url=string(),
        view_url=string(),
        input_url=string(),
        result_url=string(),
        alpha_url=string(),
    ),
    "Task": {
        "allOf": [
            ref("Item"),
            obj(
                ["attempts", "created_at"],
                batch_id=nullable(string(format="uuid")),
                attempts={"type": "integer", "minimum": 0},
                width=nullable({"type": "integer"}),
                height=nullable({"type": "integer"}),
                created_at=string(format="date-time"),
                finished_at=nullable(string(format="date-time")),
            ),
        ]
    },
    "Batch": obj(
        ["batch_id", "state", "total", "done", "failed", "pending", "items"],
        batch_id=string(format="uuid"),
        state=string(enum=["running", "finalizing", "done"]),
        total={"type": "integer"},
        done={"type": "integer", "description": "items that succeeded"},
        failed={"type": "integer"},
        pending={"type": "integer"},
        created_at=string(format="date-time"),
        finished_at=nullable(string(format="date-time")),
        error=nullable(string(description="why the batch ended without its ZIP")),
        view_url=string(),
        zip_url=string(),
        items_offset={"type": "integer"},
        items={"type": "array", "items": ref("Item")},
    ),
}


def multipart(properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def paths() -> dict:
    binary = string(format="binary")
    page = [
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
    ]
    download = [{"name": "download", "in": "query", "schema": string(enum=["1"]), "description": "as attachment"}]
    return {
        "/api/v1/images": {
            "post": operation(
                "Submit one image",
                (202, json_response("Queued", ref("TaskAccepted"), polled=True)),
                [400, 401, 413, 415, 503],
                requestBody=multipart({"file": binary, **FORM_OPTIONS}, ["file"]),
            )
        },
        "/api/v1/batches": {
            "post": operation(
                "Submit several images as one batch (refused files are listed, the rest run)",
                (202, json_response("Queued", ref("BatchAccepted"), polled=True)),
                [400, 401, 413, 415, 503],
                requestBody=multipart({"files": {"type": "array", "items": binary}, **FORM_OPTIONS}, ["files"]),
            )
        },
        "/api/v1/batches/folder": {
            "post": operation(
                "Submit every image of a server-side folder (operators)",
                (202, json_response("Queued", ref("BatchAccepted"), polled=True)),
                [400, 401, 403, 404, 503],
                requestBody={"required": True, "content": {"application/json": {"schema": ref("FolderRequest")}}},
            )
        },
        "/api/v1/batches/{id}": {
            "get": operation(
                "A batch's progress and items",
                (200, json_response("Batch", ref("Batch"), polled=True)),
                [400, 401, 404, 503],
                parameters=[ID, *page],
            )
        },
        "/api/v1/batches/{id}/zip": {
            "get": operation(
                "The finished batch's ZIP (results and manifest.json)",
                (200, binary_response("ZIP archive", ["application/zip"])),
                [400, 401, 404, 503],
                parameters=[ID],
            )
        },
        "/api/v1/tasks/{id}": {
            "get": operation(
                "A task's state",
                (200, json_response("Task", ref("Task"), polled=True)),
                [400, 401, 404, 503],
                parameters=[ID],
            )
        },
        "/api/v1/tasks/{id}/retry": {
            "post": operation(
                "Requeue a failed task",
                (202, json_response("Requeued", ref("TaskAccepted"), polled=True)),
                [400, 401, 404, 409, 503],
                parameters=[ID],
            )
        },
        "/api/v1/tasks/{id}/result": {
            "get": operation(
                "The cut-out",
                (200, binary_response("Result", IMAGE_TYPES)),
                [400, 401, 404, 503],
                parameters=[ID, *download],
            )
        },
        "/api/v1/tasks/{id}/alpha": {
            "get": operation(
                "The alpha matte (grey PNG); 404 for results flattened on a colour",
                (200, binary_response("Alpha matte", ["image/png"])),
                [400, 401, 404, 503],
                parameters=[ID, *download],
            )
        },
        "/api/v1/tasks/{id}/input": {
            "get": operation(
                "The original upload",
                (200, binary_response("Original", [*INPUT_TYPES, "application/octet-stream"])),
                [400, 401, 404, 503],
                parameters=[ID, *download],
            )
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": json_response("OpenAPI document", {"type": "object"})},
            }
        },
    }


@cache
def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cvunet-matting",
            "version": __version__,
            "description": "Image matting (background removal) behind a queue: submit, poll, download.",
        },
        "paths": paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        # Tokens are optional: required only when CVUNET_API_TOKENS is set.
        "security": [{}, {"bearerAuth": []}],
    }
