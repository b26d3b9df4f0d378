"""The routing table of /api/v1: every operation, declared once (api.py serves them, openapi.py publishes them)."""

from __future__ import annotations

from cvunet_matting.states import TASK_STATES
from cvunet_matting.webapp.inputs import FILE_OPTIONS
from cvunet_matting.webapp.waiting import MAX_WAIT_S

from .schemas import FORM_OPTIONS, IMAGE_TYPES, INPUT_TYPES, binary_response, json_response, multipart, ref, string
from .spec import ChoiceQuery, FlagQuery, NumberQuery, Operation

ITEMS_LIMIT = 1000  # the most items of a batch one status response lists
TASKS_LIMIT = 100  # the most tasks (or batches) one listing response holds
SUBMIT_ERRORS = (400, 401, 413, 415, 422, 429, 503)
READ_ERRORS = (400, 401, 404, 503)
DOWNLOAD_ERRORS = (*READ_ERRORS, 410, 429)  # retention removed the file; too many downloads at once
OFFSET = NumberQuery("offset", 0, 2**31 - 1)
PAGE = (OFFSET, NumberQuery("limit", ITEMS_LIMIT, ITEMS_LIMIT))
LISTING = (OFFSET, NumberQuery("limit", 50, TASKS_LIMIT))  # a page of a caller's tasks or batches
DOWNLOAD = (FlagQuery("download", "as attachment"),)
WAIT = NumberQuery(
    "wait",
    0.0,
    MAX_WAIT_S,
    float,
    "hold the request until the work ends (answered the moment it does), or this many seconds pass; "
    "a web process holds a few dozen such requests at once, and answers 429 with Retry-After beyond that",
)
WAIT_ERRORS = (429,)
# With ?wait=: answer as soon as the batch's finished images are no longer this many (a progress bar's
# long-poll), not only at its end.
SEEN = NumberQuery(
    "seen",
    None,
    2**31 - 1,
    description="with ?wait=, answer as soon as the number of finished images (done + failed) differs from"
    " this, not only when the batch ends: a progress bar's long-poll",
)
# A render's body: only the output options, as a form (none at all: the defaults).
RENDER_OPTIONS = {
    "required": False,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": dict(FORM_OPTIONS)}},
        "application/x-www-form-urlencoded": {
            "schema": {"type": "object", "properties": {k: v for k, v in FORM_OPTIONS.items() if k not in FILE_OPTIONS}}
        },
    },
}
# A batch is rendered again on the bookkeeping worker from the stored files alone: no uploaded background.
BATCH_RENDER_OPTIONS = {
    "required": False,
    "content": {
        media: {
            "schema": {"type": "object", "properties": {k: v for k, v in FORM_OPTIONS.items() if k not in FILE_OPTIONS}}
        }
        for media in ("multipart/form-data", "application/x-www-form-urlencoded")
    },
}


def _queued(schema: str, description: str = "Queued") -> tuple[int, dict]:
    return 202, json_response(description, ref(schema), polled=True)


OPERATIONS = {
    "submit_image": Operation(
        "POST",
        "/images",
        "Submit one image",
        _queued("TaskAccepted"),
        SUBMIT_ERRORS,
        body=multipart({"file": string(format="binary"), **FORM_OPTIONS}, ["file"]),
        query=(WAIT,),
        also=((200, json_response("Finished within ?wait= (no wait slot free: 202 as without it)", ref("Task"))),),
    ),
    "submit_batch": Operation(
        "POST",
        "/batches",
        "Submit several images as one batch (refused files are listed, the rest run)",
        _queued("BatchAccepted"),
        SUBMIT_ERRORS,
        body=multipart({"files": {"type": "array", "items": string(format="binary")}, **FORM_OPTIONS}, ["files"]),
    ),
    "submit_folder": Operation(
        "POST",
        "/batches/folder",
        "Submit every image of a server-side folder (admins only)",
        _queued("BatchAccepted"),
        (400, 401, 403, 404, 422, 429, 503),
        body={"required": True, "content": {"application/json": {"schema": ref("FolderRequest")}}},
    ),
    "batch_status": Operation(
        "GET",
        "/batches/<batch_id:batch_id>",
        "A batch's progress and items",
        (200, json_response("Batch", ref("Batch"), polled=True)),
        (*READ_ERRORS, *WAIT_ERRORS),
        query=(*PAGE, WAIT, SEEN),
    ),
    "batch_zip": Operation(
        "GET",
        "/batches/<batch_id:batch_id>/zip",
        "The finished batch's ZIP (results and manifest.json)",
        (200, binary_response("ZIP archive", ["application/zip"])),
        DOWNLOAD_ERRORS,
    ),
    "list_batches": Operation(
        "GET",
        "/batches",
        "Your batches, newest first (an admin's: everyone's), with their progress",
        (200, json_response("A page of batches", ref("BatchList"))),
        (400, 401, 503),
        query=LISTING,
    ),
    "limits": Operation(
        "GET",
        "/limits",
        "What one request may hold (bytes, files, pixels per image) and your account's quotas and use: how a"
        " client sizes its batches",
        (200, json_response("Limits", ref("Limits"))),
        (401, 503),
    ),
    "list_tasks": Operation(
        "GET",
        "/tasks",
        "Your tasks, newest first (an admin's: everyone's), optionally in one state",
        (200, json_response("A page of tasks", ref("TaskList"))),
        (400, 401, 503),
        query=(ChoiceQuery("state", TASK_STATES, "only tasks in this state"), *LISTING),
    ),
    "task_status": Operation(
        "GET",
        "/tasks/<task_id>",
        "A task's state",
        (200, json_response("Task", ref("Task"), polled=True)),
        (*READ_ERRORS, *WAIT_ERRORS),
        query=(WAIT,),
    ),
    "retry": Operation(
        "POST",
        "/tasks/<task_id>/retry",
        "Requeue a failed task (one that crashed the worker: admins only, with force=1; a refused input: force=1)",
        _queued("TaskAccepted", "Requeued"),
        (400, 401, 404, 409, 422, 429, 503),
        query=(FlagQuery("force", "retry a refused input anyway; admins: even one that crashed the worker"),),
    ),
    "render_task": Operation(
        "POST",
        "/tasks/<task_id>/render",
        "Render a finished cut-out again with other options (edges, background, crop, size, scale, position,"
        " format) from its kept raw matte, without the model: a new task, finished in the answer (the old one"
        " stays), counted by your quotas like a new image. A background image comes as a multipart file,"
        " `bg_image`; a crop of a matte with no subject answers 422 `empty_subject`",
        (201, json_response("The new task, finished", ref("Task"))),
        (400, 401, 404, 409, 410, 413, 415, 422, 429, 503),
        body=RENDER_OPTIONS,
    ),
    "render_batch": Operation(
        "POST",
        "/batches/<batch_id:batch_id>/render",
        "Render every cut-out of a finished batch again with other options (edges, background colour, crop,"
        " size, scale, position, format) from their kept raw mattes, without the model, into a new batch with"
        " its own ZIP and manifest (the old one stays); its images count toward your quotas like new ones. An"
        " image the old batch did not finish, or whose files are gone, fails in the new batch with code"
        " `no_matte`",
        _queued("BatchAccepted"),
        (400, 401, 404, 409, 410, 422, 429, 503),
        body=BATCH_RENDER_OPTIONS,
    ),
    "cancel_task": Operation(
        "POST",
        "/tasks/<task_id>/cancel",
        "Cancel a task no worker has started (it ends as failed, code `cancelled`; a retry runs it after all)",
        (200, json_response("Cancelled", ref("Cancelled"))),
        (400, 401, 404, 409, 503),
    ),
    "cancel_batch": Operation(
        "POST",
        "/batches/<batch_id>/cancel",
        "Cancel a batch's tasks that no worker has started (those running finish; the batch then ends)",
        (200, json_response("Cancelled", ref("Cancelled"))),
        READ_ERRORS,
    ),
    "delete_task": Operation(
        "DELETE",
        "/tasks/<task_id>",
        "Delete a finished task outside any batch: its files go now, and it leaves the history (404 from then on)",
        (200, json_response("Deleted", ref("Deleted"))),
        (400, 401, 404, 409, 503),
    ),
    "delete_batch": Operation(
        "DELETE",
        "/batches/<batch_id:batch_id>",
        "Delete a finished batch with all its images: their files and its ZIP go now (404 from then on)",
        (200, json_response("Deleted", ref("Deleted"))),
        (400, 401, 404, 409, 503),
    ),
    "task_result": Operation(
        "GET",
        "/tasks/<task_id>/result",
        "The cut-out",
        (200, binary_response("Result", IMAGE_TYPES)),
        DOWNLOAD_ERRORS,
        query=DOWNLOAD,
    ),
    "task_alpha": Operation(
        "GET",
        "/tasks/<task_id>/alpha",
        "The alpha matte (grey PNG); 404 for results flattened on a colour",
        (200, binary_response("Alpha matte", ["image/png"])),
        DOWNLOAD_ERRORS,
        query=DOWNLOAD,
    ),
    "task_input": Operation(
        "GET",
        "/tasks/<task_id>/input",
        "The original upload",
        (200, binary_response("Original", [*INPUT_TYPES, "application/octet-stream"])),
        DOWNLOAD_ERRORS,
        query=DOWNLOAD,
    ),
    "openapi": Operation(
        "GET",
        "/openapi.json",
        "This document",
        (200, json_response("OpenAPI document", {"type": "object"})),
        public=True,
    ),
}
PUBLIC_ENDPOINTS = frozenset(f"api.{name}" for name, operation in OPERATIONS.items() if operation.public)
