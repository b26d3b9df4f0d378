"""The OpenAPI document is valid, and the API keeps to it under generated requests (Schemathesis)."""

from __future__ import annotations

import re

import pytest
import schemathesis
from flask import Blueprint
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from cvunet_matting.image.imaging import INPUT_FORMATS
from cvunet_matting.states import BATCH_STATES, TASK_STATES
from cvunet_matting.web import create_app
from cvunet_matting.webapp import waiting
from cvunet_matting.webapp.api.openapi import document
from cvunet_matting.webapp.api.operations import OPERATIONS
from cvunet_matting.webapp.api.spec import router
from cvunet_matting.webapp.dropin.openapi import document as dropin_document
from cvunet_matting.webapp.errors import ERROR_STATUSES
from tests import support

MAX_EXAMPLES = 15
# No worker runs here, so an upload asked to ?wait= is held to the end of its wait: the generator picks
# the largest (30 s) and its neighbours, a minute of the suite spent on a hold whose answer has the same
# shape after 1 s. The hold itself, at the lengths clients ask for, is test_waiting.py's.
HELD_AT_MOST_S = 1.0


def served_api_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route the app serves under /api/v1."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?\w+>", "{id}", rule.rule)
            routes |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_openapi_document_is_valid_and_lists_exactly_the_served_api_routes(tmp_path):
    spec = document()
    validate(spec)  # raises on an invalid OpenAPI 3.0 document
    app = create_app({"CVUNET_DATA_DIR": str(tmp_path)})
    documented = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert served_api_routes(app) == documented
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")}
    assert endpoints == {f"api.{name}" for name in OPERATIONS}


def test_a_route_cannot_be_served_without_its_declaration():
    route = router(Blueprint("scratch", __name__, url_prefix="/api/v1"), {})
    with pytest.raises(KeyError, match="undeclared"):

        @route
        def undeclared():
            return ""


def test_the_document_publishes_the_facts_the_code_serves():
    spec = document()
    schemas = spec["components"]["schemas"]
    assert schemas["Item"]["properties"]["state"]["enum"] == list(TASK_STATES)
    assert schemas["Batch"]["properties"]["state"]["enum"] == list(BATCH_STATES)
    original = spec["paths"]["/api/v1/tasks/{id}/input"]["get"]["responses"]["200"]["content"]
    assert list(original) == [media_type for _, media_type in INPUT_FORMATS.values()] + ["application/octet-stream"]
    for item in spec["paths"].values():
        for operation in item.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response["description"] == ERROR_STATUSES[int(status)][0]
    limit = next(p for p in spec["paths"]["/api/v1/batches/{id}"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 0, "maximum": 1000}


@pytest.fixture
def api_schema(clean_state, api_key, monkeypatch):
    hold = waiting.hold
    monkeypatch.setattr(
        waiting,
        "hold",
        lambda hub, ids, read, final, s, *place: hold(hub, ids, read, final, min(s, HELD_AT_MOST_S), *place),
    )
    app = create_app({"TESTING": True})
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    schema.config.update(headers={"Authorization": f"Bearer {api_key}"})  # the auth checks strip it again
    return schema


@pytest.fixture(scope="module")
def api_key(database) -> str:
    """An admin's key: every operation, the folder API included, is reached past authentication."""
    return support.make_user(admin=True, prefix="schemathesis").key


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.services
@schema.parametrize()
def test_api_keeps_to_its_schema(case, api_key):
    # Schema-valid bytes are rarely a decodable image, so "valid data is accepted" cannot hold for uploads;
    # every other check (no 5xx, documented status codes, content types, response schemas...) runs.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
    assert response.status_code < 500
    # With the key, the operation itself answered (negative cases drop or garble the header: 401).
    sent = dict(response.request.headers).get("Authorization")
    assert response.status_code != 401 or sent != f"Bearer {api_key}"


def test_the_document_requires_a_key_everywhere_but_itself():
    spec = document()
    assert spec["security"] == [{"bearerAuth": []}]
    public = [path for path, item in spec["paths"].items() for op in item.values() if op.get("security") == []]
    assert public == ["/api/v1/openapi.json"]


def test_the_edge_options_are_published_for_forms_and_json():
    spec = document()
    form = spec["paths"]["/api/v1/images"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    options = spec["components"]["schemas"]["Options"]["properties"]
    for name in ("alpha_threshold", "opaque_threshold", "erode", "feather", "refine", "decontaminate", "solidify"):
        assert name in form["properties"] and name in options, name
    assert form["properties"]["opaque_threshold"]["maximum"] == 255
    assert form["properties"]["alpha_threshold"]["maximum"] == 255 and form["properties"]["feather"]["maximum"] == 64
    assert options["refine"] == {"type": "boolean"} and options["solidify"] == {"type": "boolean"}
    assert "default on" in form["properties"]["solidify"]["description"]


def test_the_canvas_options_are_published_for_forms_json_and_the_rerender():
    spec = document()
    paths = spec["paths"]
    options = spec["components"]["schemas"]["Options"]["properties"]
    for path in ("/api/v1/images", "/api/v1/batches", "/api/v1/tasks/{id}/render"):
        form = paths[path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        for name in ("crop", "crop_margin", "size", "scale", "position", "bg_blur"):
            assert name in form and name in options, (path, name)
        assert form["bg_image"]["type"] == "string" and form["bg_image"]["format"] == "binary"
    assert "bg_image" not in options  # JSON cannot carry an upload (folder batches)
    render_body = paths["/api/v1/tasks/{id}/render"]["post"]["requestBody"]["content"]
    urlencoded = render_body["application/x-www-form-urlencoded"]
    assert "bg_image" not in urlencoded["schema"]["properties"] and "crop" in urlencoded["schema"]["properties"]
    assert options["crop"] == {"type": "boolean"} and options["bg_blur"]["maximum"] == 200
    assert "'30px'" in options["crop_margin"]["description"] and "preview" in options["size"]["description"]
    assert "422" in paths["/api/v1/tasks/{id}/render"]["post"]["responses"]
    item = spec["components"]["schemas"]["Item"]["properties"]
    assert "empty_subject" in item["error_code"]["description"]


def test_the_confidence_score_is_published_on_every_item():
    item = document()["components"]["schemas"]["Item"]["properties"]
    assert item["confidence"]["type"] == "number" and item["confidence"]["nullable"] is True
    assert item["confidence"]["maximum"] == 1 and item["doubtful"] == {
        "type": "boolean",
        "description": "confidence below 0.85: worth a look",
    }


def test_waiting_is_published_where_it_is_served():
    spec = document()
    for path, method in (("/api/v1/tasks/{id}", "get"), ("/api/v1/batches/{id}", "get"), ("/api/v1/images", "post")):
        operation = spec["paths"][path][method]
        wait = next(p for p in operation["parameters"] if p["name"] == "wait")
        assert wait["schema"] == {"type": "number", "minimum": 0, "maximum": 30}, path
        assert "429" in operation["responses"], path
    finished = spec["paths"]["/api/v1/images"]["post"]["responses"]["200"]
    assert finished["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Task"}
    task = spec["components"]["schemas"]["Task"]["allOf"][1]["properties"]
    assert task["poll_after_s"]["type"] == "number" and "wait_url" in task


def test_the_api_page_shows_every_operation_to_anyone_without_a_script():
    app = create_app({"TESTING": True})
    page = app.test_client().get("/api-docs")  # no session, no key: as open as the document
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for path, methods in document()["paths"].items():
        for method in methods:
            assert f"{method.upper()}</span> <code>{path}</code>" in html, (method, path)
    assert "<code>alpha_threshold</code>" in html and "integer 0-255" in html  # a form field, its range
    assert "<code>state</code>" in html and "one of pending, started, retry, success, failure" in html
    assert "<script>" not in html.split("</head>")[1]  # drawn on the server; the page's own app.js only


def test_the_batch_render_is_published_with_its_options_and_refusals():
    spec = document()
    operation = spec["paths"]["/api/v1/batches/{id}/render"]["post"]
    assert operation["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchAccepted"
    }
    assert {"400", "404", "409", "410", "429"} <= set(operation["responses"])
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    single = spec["paths"]["/api/v1/tasks/{id}/render"]["post"]["requestBody"]["content"]["multipart/form-data"]
    # The single render's fields but the uploaded background: a batch renders from its stored files alone.
    assert form == {k: v for k, v in single["schema"]["properties"].items() if k != "bg_image"}
    assert {"erode", "feather", "bg_color", "format", "crop", "size"} <= set(form) and "bg_image" not in form
    lineage = spec["components"]["schemas"]["Task"]["allOf"][1]["properties"]["rendered_from"]
    assert lineage["format"] == "uuid" and lineage["nullable"] is True


# ------------------------------------------------------------------ the drop-in endpoints (remove.bg, rembg)

DROPIN_PREFIXES = ("/v1.0/", "/api/remove")


def test_the_dropin_document_is_valid_and_lists_exactly_the_served_dropin_routes(tmp_path):
    spec = dropin_document()
    validate(spec)
    app = create_app({"CVUNET_DATA_DIR": str(tmp_path)})
    served = {
        (rule.rule, method.lower())
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith(DROPIN_PREFIXES) and rule.rule != "/v1.0/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == {(path, method) for path, item in spec["paths"].items() for method in item}
    assert app.test_client().get("/v1.0/openapi.json").get_json() == spec  # for anyone, no key
    fields = spec["paths"]["/v1.0/removebg"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    for name in (
        "image_file",
        "image_file_b64",
        "image_url",
        "size",
        "type",
        "format",
        "channels",
        "bg_color",
        "bg_image_file",
        "crop",
        "crop_margin",
        "scale",
        "position",
        "roi",
    ):  # remove.bg's, as the issue lists
        assert name in fields["properties"], name
    headers = spec["paths"]["/v1.0/removebg"]["post"]["responses"]["200"]["headers"]
    assert {"X-Width", "X-Height", "X-Type", "X-Credits-Charged"} <= set(headers)


@pytest.fixture
def dropin_schema(clean_state, api_key, worker_factory):
    worker_factory()  # generated images are often valid (a 1x1 PNG): each is a task, answered when it ends
    app = create_app({"TESTING": True})
    schema = schemathesis.openapi.from_wsgi("/v1.0/openapi.json", app)
    schema.config.generation.update(max_examples=MAX_EXAMPLES, database="none")
    schema.config.update(headers={"X-Api-Key": api_key, "Authorization": f"Bearer {api_key}"})
    return schema


dropin = schemathesis.pytest.from_fixture("dropin_schema")


@pytest.mark.services
@pytest.mark.stack
@dropin.parametrize()
def test_the_dropin_endpoints_keep_to_their_schema(case, api_key):
    # Not negative_data_rejection: the drop-ins take an empty free-text or edge field as its default, as
    # rembg's and remove.bg's servers do, where the generator counts "" as schema-violating. Server errors, statuses,
    # content types and the answers' shapes are all still checked.
    response = case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection])
    assert response.status_code < 500
