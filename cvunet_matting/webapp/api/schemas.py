"""The pieces of the OpenAPI description of /api/v1: schema helpers and the shared component schemas.

Operations (operations.py) and the document (openapi.py) are built from these, so a shape is written once.
"""

from __future__ import annotations

from cvunet_matting.image.canvas_options import (
    MAX_BLUR_PX,
    MAX_MARGIN_PERCENT,
    MAX_MARGIN_PX,
    MAX_SCALE,
    MAX_SIDE,
    MIN_SCALE,
    MIN_SIDE,
    SIZE_WORDS,
)
from cvunet_matting.image.confidence import DOUBTFUL
from cvunet_matting.image.encoding import DECONTAMINATE, FLAG_WORDS, FORMAT_WORDS, MAX_EDGE_PX, REFINE, SOLIDIFY
from cvunet_matting.image.imaging import INPUT_FORMATS
from cvunet_matting.services.lookup import FAILURES_LISTED
from cvunet_matting.states import BATCH_STATES, TASK_STATES

IMAGE_TYPES = ("image/png", "image/webp", "image/jpeg")  # what a result can be
INPUT_TYPES = tuple(media_type for _, media_type in INPUT_FORMATS.values())


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**extra) -> dict:
    return {"type": "string", **extra}


def nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def obj(required: list[str], **properties) -> dict:
    return {"type": "object", "required": required, "properties": properties}


# Retention (CVUNET_RETENTION_DAYS) removes a finished task's or batch's files; the row stays, its state
# unchanged, and its file links are left out: those downloads answer 410 with code `expired`.
EXPIRY = {
    "expired": {"type": "boolean", "description": "retention removed the files: no file links, downloads 410"},
    "expired_at": nullable(string(format="date-time", description="when retention removed the files")),
}


RETRY_AFTER = {
    "Retry-After": {
        "description": (
            "present while the work is unfinished: whole seconds to wait before polling again (0: at once), "
            "`poll_after_s` rounded. Rather than poll, ask `wait_url`: it answers the moment the work ends"
        ),
        "schema": {"type": "integer", "minimum": 0},
    }
}
# In the body of unfinished work: the same hint with sub-second resolution, and where to wait instead.
POLL_HINT = {
    "poll_after_s": {
        "type": "number",
        "description": "half the expected remaining wait (from the queue ahead and the recent pace), 0.05 to 10 s",
    },
    "wait_url": string(description="the status URL with ?wait=: held until the work ends (30 s at most)"),
}


def json_response(description: str, schema: dict, polled: bool = False) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    return {**response, "headers": RETRY_AFTER} if polled else response


def binary_response(description: str, types) -> dict:
    return {"description": description, "content": {t: {"schema": string(format="binary")} for t in types}}


FORM_OPTIONS = {
    "format": string(enum=list(FORMAT_WORDS), description="output format: png (the default), webp or jpg"),
    "bg_color": string(description="flatten on this colour: '#RRGGBB', 'r,g,b' or a name; empty: keep alpha"),
    "alpha_only": string(enum=list(FLAG_WORDS), description="true: return the alpha matte only (grey PNG)"),
    "alpha_threshold": {
        "type": "integer",
        "minimum": 0,
        "maximum": 255,
        "description": "alpha below this becomes 0 (0: off)",
    },
    "opaque_threshold": {
        "type": "integer",
        "minimum": 0,
        "maximum": 255,
        "description": "alpha at or above this becomes 255, for a subject left partly see-through (0: off)",
    },
    "erode": {"type": "integer", "minimum": 0, "maximum": MAX_EDGE_PX, "description": "shrink the matte (px)"},
    "feather": {"type": "integer", "minimum": 0, "maximum": MAX_EDGE_PX, "description": "soften the edge (px)"},
    "refine": string(
        enum=list(FLAG_WORDS),
        description=f"re-fit the matte to the full-size photo (default {'on' if REFINE else 'off'})",
    ),
    "decontaminate": string(
        enum=list(FLAG_WORDS),
        description=f"take the old background's colour out of edge pixels (default {'on' if DECONTAMINATE else 'off'})",
    ),
    "solidify": string(
        enum=list(FLAG_WORDS),
        description="make the subject opaque far inside its outline and the background clear far outside it,"
        f" the edge kept soft (default {'on' if SOLIDIFY else 'off'}; off for glass, smoke, a veil)",
    ),
}
_GEOMETRY = "remove.bg's spelling"
CANVAS_TEXT = {
    "crop_margin": string(
        maxLength=64,
        description=f"with crop: the margin around the subject ({_GEOMETRY}): 1, 2 or 4 values (all sides;"
        f" top-bottom left-right; top right bottom left), each 0-{MAX_MARGIN_PX}px or 0-{MAX_MARGIN_PERCENT}%"
        " of the subject's size, e.g. '30px', '10%', '10% 5%'; default 0",
    ),
    "size": string(
        maxLength=64,
        description=f"the most the output may hold: {', '.join(SIZE_WORDS)} (preview: 0.25 MP, medium 1.5 MP,"
        f" hd 4 MP; full, auto, 4k, 50MP: as drawn), or a longest side in px ({MIN_SIDE}-{MAX_SIDE}, e.g."
        " '1024px'); shrinks, never enlarges; applied last. Default full",
    ),
    "scale": string(
        maxLength=64,
        description=f"the subject's size in the canvas: 'original' (default) or {MIN_SCALE}%-{MAX_SCALE}% (its"
        " bounding box fitted to that share of the canvas); implies position 'center' unless one is given",
    ),
    "position": string(
        maxLength=64,
        description="where the subject sits in the canvas: 'original' (default unless scale is given),"
        " 'center' (default with scale), 'X%' or 'X% Y%' (0% left or top, 100% right or bottom)",
    ),
}
CANVAS_FORM = {
    "crop": string(
        enum=list(FLAG_WORDS),
        description="true: crop to the subject's bounding box (from the final alpha, specks ignored); a matte"
        " with no subject fails the image with code `empty_subject`",
    ),
    **CANVAS_TEXT,
    "bg_image": string(
        format="binary",
        description="an image to put behind the subject, fitted by cover (checked as any upload); the result"
        " is flattened onto it. Exclusive with bg_color and bg_blur",
    ),
    "bg_blur": {
        "type": "integer",
        "minimum": 0,
        "maximum": MAX_BLUR_PX,
        "description": "px (0: off): the original photo, blurred, behind the subject; the result is flattened"
        " onto it. Exclusive with bg_color and bg_image",
    },
}
FORM_OPTIONS |= CANVAS_FORM
EDGE_JSON = {
    "alpha_threshold": FORM_OPTIONS["alpha_threshold"],
    "opaque_threshold": FORM_OPTIONS["opaque_threshold"],
    "erode": FORM_OPTIONS["erode"],
    "feather": FORM_OPTIONS["feather"],
    "refine": {"type": "boolean"},
    "decontaminate": {"type": "boolean"},
    "solidify": {"type": "boolean"},
}

SCHEMAS = {
    "Error": obj(
        ["error"],
        error=obj(
            ["code", "message"],
            code=string(),
            message=string(),
            state=string(enum=[*TASK_STATES, *BATCH_STATES]),
            refused={"type": "array", "items": ref("Refused")},
            expired_at=string(format="date-time", description="code `expired` (410): when the file was removed"),
        ),
    ),
    "Refused": obj(["filename", "code", "message"], filename=string(), code=string(), message=string()),
    "Options": {
        "type": "object",
        "properties": {
            "format": nullable(FORM_OPTIONS["format"]),
            "bg_color": nullable(FORM_OPTIONS["bg_color"]),
            "alpha_only": {"type": "boolean"},
            **EDGE_JSON,
            "crop": {"type": "boolean"},
            **{name: nullable(schema) for name, schema in CANVAS_TEXT.items()},
            "bg_blur": CANVAS_FORM["bg_blur"],
        },
    },
    "FolderRequest": obj(
        ["folder"],
        folder=string(minLength=1, description="a folder under CVUNET_ALLOWED_ROOTS (relative: under the first)"),
        options=ref("Options"),
    ),
    "Cancelled": obj(
        ["cancelled"],
        task_id=string(format="uuid"),
        batch_id=string(format="uuid"),
        cancelled={
            "type": "integer",
            "minimum": 0,
            "description": "tasks cancelled (not started yet); each ends at once as failed, code `cancelled`"
            " (a batch ends once workers have dropped those of its messages already on the queue)",
        },
    ),
    "Deleted": obj(
        ["deleted", "files_removed"],
        task_id=string(format="uuid"),
        batch_id=string(format="uuid"),
        deleted={"type": "integer", "minimum": 0, "description": "tasks deleted (a batch's: all its images)"},
        files_removed={
            "type": "integer",
            "minimum": 0,
            "description": "files removed from disk: results, alpha mattes, originals no other kept task shares,"
            " a batch's ZIP and manifest",
        },
    ),
    "TaskAccepted": obj(
        ["task_id", "status_url"], task_id=string(format="uuid"), status_url=string(), view_url=string(), **POLL_HINT
    ),
    "BatchAccepted": obj(
        ["batch_id", "status_url", "total"],
        batch_id=string(format="uuid"),
        status_url=string(),
        view_url=string(),
        total=nullable(
            {
                "type": "integer",
                "minimum": 0,
                "description": "null for a folder batch: a worker lists the folder; its status gives the total",
            }
        ),
        state=string(enum=list(BATCH_STATES), description="'listing' while a folder batch is being listed"),
        refused={"type": "array", "items": ref("Refused")},
        **POLL_HINT,
    ),
    "Item": obj(
        ["task_id", "filename", "state", "error", "expired", "expired_at", "status_url"],
        task_id=string(format="uuid"),
        filename=string(),
        state=string(enum=list(TASK_STATES)),
        error=nullable(string(description="a short reason; details stay in the server's logs")),
        error_code=nullable(
            string(description="refused, crashed, timeout, storage, internal, cancelled or empty_subject")
        ),
        confidence=nullable(
            {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "how sure the model was of the cut-out, from its raw matte: 1 less the share"
                " of its visible pixels left partly transparent away from the subject's outline; 0 when it"
                " found no subject or the whole frame; null until it succeeded (or made before scores)",
            }
        ),
        doubtful={"type": "boolean", "description": f"confidence below {DOUBTFUL}: worth a look"},
        **EXPIRY,
        status_url=string(),
        view_url=string(),
        input_url=string(description="until the task expires; absent for a file refused on arrival (none stored)"),
        result_url=string(description="once it succeeded, until it expires"),
        alpha_url=string(description="as result_url, when the result keeps an alpha channel"),
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
                rendered_from=nullable(
                    string(
                        format="uuid",
                        description="a re-render's source task (POST .../render); null for the model's own results",
                    )
                ),
                **POLL_HINT,
            ),
        ]
    },
    "TaskList": obj(
        ["tasks", "total", "offset", "limit"],
        tasks={"type": "array", "items": ref("Task")},
        total={"type": "integer", "description": "tasks in this listing, over all pages"},
        offset={"type": "integer"},
        limit={"type": "integer"},
    ),
    "BatchList": obj(
        ["batches", "total", "offset", "limit"],
        batches={
            "type": "array",
            "items": obj(
                ["batch_id", "state", "total", "done", "failed", "pending", "expired", "expired_at", "status_url"],
                batch_id=string(format="uuid"),
                state=string(enum=list(BATCH_STATES)),
                total={"type": "integer"},
                done={"type": "integer"},
                failed={"type": "integer"},
                pending={"type": "integer"},
                created_at=string(format="date-time"),
                finished_at=nullable(string(format="date-time")),
                error=nullable(string()),
                **EXPIRY,
                view_url=string(),
                status_url=string(description="the batch's status and items"),
                zip_url=string(description="once the ZIP is written, until the batch expires"),
            ),
        },
        total={"type": "integer", "description": "batches in this listing, over all pages"},
        offset={"type": "integer"},
        limit={"type": "integer"},
    ),
    "Limits": obj(
        ["max_request_bytes", "max_files_per_request", "max_pixels", "quotas", "usage"],
        max_request_bytes={"type": "integer", "description": "the largest request body (413 beyond)"},
        max_files_per_request={"type": "integer", "description": "the most files one batch request holds"},
        max_pixels={"type": "integer", "description": "the largest input image, in pixels (refused beyond)"},
        quotas=obj(
            ["max_batch", "max_in_flight", "max_per_day"],
            max_batch=nullable({"type": "integer", "description": "files per batch, refused ones included"}),
            max_in_flight=nullable({"type": "integer", "description": "images waiting or running at once"}),
            max_per_day=nullable({"type": "integer", "description": "files per day (UTC)"}),
        ),
        usage=obj(
            ["in_flight", "today"],
            in_flight={"type": "integer", "description": "your images waiting or running now"},
            today={"type": "integer", "description": "your files since midnight UTC"},
        ),
    ),
    "Batch": obj(
        ["batch_id", "state", "total", "done", "failed", "pending", "expired", "expired_at", "items"],
        batch_id=string(format="uuid"),
        state=string(enum=list(BATCH_STATES)),
        total={"type": "integer"},
        done={"type": "integer", "description": "items that succeeded"},
        failed={"type": "integer"},
        pending={"type": "integer"},
        created_at=string(format="date-time"),
        finished_at=nullable(string(format="date-time")),
        error=nullable(string(description="why the batch ended without its ZIP")),
        **EXPIRY,
        view_url=string(),
        zip_url=string(description="once the ZIP is written, until the batch expires"),
        items_offset={"type": "integer"},
        items={"type": "array", "items": ref("Item")},
        failures={
            "type": "array",
            "description": f"the first {FAILURES_LISTED} failed images, in submission order, whatever the page",
            "items": obj(
                ["task_id", "filename", "error"],
                task_id=string(format="uuid"),
                filename=string(),
                error=nullable(string()),
            ),
        },
        **POLL_HINT,
    ),
}


def multipart(properties: dict, required: list[str]) -> dict:
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
