"""The OpenAPI 3.0 description of the drop-in endpoints (served at /v1.0/openapi.json, for anyone): the
fields and answers of remove.bg's and rembg's APIs as this server takes them, from the same tables the
views read (removebg_fields.py, rembg.py), so the two cannot drift apart."""

from __future__ import annotations

from functools import cache

from cvunet_matting import __version__
from cvunet_matting.image.encoding import EDGE_KEYS
from cvunet_matting.image.rembg_models import GENERAL_MODELS
from cvunet_matting.webapp.api.schemas import FORM_OPTIONS, string

from .removebg_fields import ANSWER_FORMATS, SIZES, TYPES

FLAGS = ["true", "false"]
REMOVEBG_FIELDS = {
    "image_file": string(format="binary", description="the image (one source of the three)"),
    "image_file_b64": string(description="the image, base64"),
    "image_url": string(description="the image's URL: only from the hosts CVUNET_IMAGE_URL_HOSTS names"),
    "size": string(enum=list(SIZES), description="preview (0.25 MP, the default) ... full"),
    "type": string(enum=list(TYPES), description="accepted; sent back as X-Type (auto: other)"),
    "format": string(enum=list(ANSWER_FORMATS), description="auto: png, or jpg when nothing stays transparent"),
    "channels": string(enum=["rgba", "alpha"]),
    "bg_color": string(description="81d4fa, fff, a name; opaque only"),
    "bg_image_file": string(format="binary"),
    "crop": string(enum=FLAGS),
    "crop_margin": string(description="px or %, 1, 2 or 4 values"),
    "scale": string(description="original, or 10%-100%"),
    "position": string(description="original, center, X% or X% Y%"),
    "roi": string(description="x1 y1 x2 y2 in px or %: the whole image only"),
}
HEADERS = {
    name: {"description": text, "schema": {"type": kind}}
    for name, kind, text in (
        ("X-Width", "integer", "the result's width"),
        ("X-Height", "integer", "the result's height"),
        ("X-Type", "string", "the type asked for; other for auto"),
        ("X-Credits-Charged", "integer", "1: one task counted against the key's quotas"),
        ("X-Task-Id", "string", "the task, under /api/v1/tasks/ with the same key"),
    )
}
REMOVEBG_ERRORS = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["title", "code"],
                "properties": {"title": string(), "code": string(), "detail": string()},
            },
        }
    },
}
DETAIL = {"type": "object", "required": ["detail"], "properties": {"detail": {}}}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds before asking again"}}


def removebg_errors(statuses: dict[int, str]) -> dict:
    return {
        str(status): {
            "description": text,
            "content": {"application/json": {"schema": REMOVEBG_ERRORS}},
            **({"headers": RETRY_AFTER} if status in (429, 503) else {}),
        }
        for status, text in statuses.items()
    }


def rembg_errors(statuses: dict[int, str]) -> dict:
    return {
        str(status): {"description": text, "content": {"application/json": {"schema": DETAIL}}}
        for status, text in statuses.items()
    }


REMOVEBG = {
    "summary": "remove.bg's POST /v1.0/removebg: the cut-out in the answer (an ordinary task of the key's user)",
    "security": [{"removebgKey": []}],
    "requestBody": {
        "required": True,
        "content": {
            media: {"schema": {"type": "object", "properties": REMOVEBG_FIELDS, "additionalProperties": False}}
            for media in ("multipart/form-data", "application/x-www-form-urlencoded")
        },
    },
    "responses": {
        "200": {
            "description": "the image (Accept: application/json: its base64)",
            "headers": HEADERS,
            "content": {
                **{
                    media: {"schema": string(format="binary")}
                    for media in ("image/png", "image/jpeg", "application/zip")
                },
                "application/json": {
                    "schema": {"type": "object", "properties": {"data": {"properties": {"result_b64": string()}}}}
                },
            },
        },
        **removebg_errors(
            {
                400: "bad input, a field refused or unknown (remove.bg's codes)",
                403: "no API key, or not one of ours (auth_failed)",
                429: "over a quota of the key's user, or too many waiting requests",
                500: "the image could not be processed",
                503: "the image did not end within the wait (still_processing), or a service is down",
            }
        ),
    },
}
COUNT = {"type": "integer", "minimum": 0}
QUOTA = {"type": "integer", "minimum": 0, "nullable": True, "description": "null: no such quota"}
ACCOUNT_ATTRIBUTES = {
    "type": "object",
    "required": ["credits", "api", "quotas", "usage"],
    "properties": {
        "credits": {
            "type": "object",
            "required": ["total", "subscription", "payg", "enterprise"],
            "description": "total = subscription: the images the key's user may still send today (UTC);"
            " 2147483647 without a daily quota",
            "properties": {name: COUNT for name in ("total", "subscription", "payg", "enterprise")},
        },
        "api": {
            "type": "object",
            "required": ["free_calls", "sizes"],
            "properties": {"free_calls": COUNT, "sizes": string(enum=["all"])},
        },
        "quotas": {
            "type": "object",
            "required": ["max_per_day", "max_in_flight", "max_batch"],
            "properties": {name: QUOTA for name in ("max_per_day", "max_in_flight", "max_batch")},
        },
        "usage": {
            "type": "object",
            "required": ["in_flight", "today"],
            "properties": {"in_flight": COUNT, "today": COUNT},
        },
    },
}
ACCOUNT = {
    "summary": "remove.bg's GET /v1.0/account: the credits left (images the key's user may still send today)",
    "security": [{"removebgKey": []}],
    "responses": {
        "200": {
            "description": "the balance, in remove.bg's shape, with our quotas and their use",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["data"],
                        "properties": {
                            "data": {
                                "type": "object",
                                "required": ["attributes"],
                                "properties": {"attributes": ACCOUNT_ATTRIBUTES},
                            }
                        },
                    }
                }
            },
        },
        **removebg_errors({403: "no API key, or not one of ours (auth_failed)", 503: "a service is down"}),
    },
}
REMBG_PARAMETERS = {
    "model": string(enum=list(GENERAL_MODELS)),
    **{name: string(enum=FLAGS) for name in ("a", "om", "ppm")},
    **{name: {"type": "integer", "minimum": 0, "maximum": 255} for name in ("af", "ab")},
    "ae": {"type": "integer", "minimum": 0, "description": "accepted and ignored (rembg's trimap erosion)"},
    **{name: FORM_OPTIONS[name] for name in EDGE_KEYS},
}
QUERY = [
    {
        "name": "bgc",
        "in": "query",
        "schema": string(pattern=r"^(\d{1,3},\d{1,3},\d{1,3}(,255)?)?$", description="r,g,b[,255]: flatten on it"),
    },
]
REMBG_ANSWERS = {
    "200": {"description": "the PNG", "content": {"image/png": {"schema": string(format="binary")}}},
    **rembg_errors(
        {
            400: "a bad image or URL",
            401: "no API key, or not one of ours",
            413: "over the upload limit",
            415: "not a supported image",
            422: "a parameter refused (FastAPI's shape)",
            429: "over a quota",
            500: "the image could not be processed",
            503: "the image did not end within the wait, or a service is down",
        }
    ),
}
REMBG_POST = {
    "summary": "rembg's POST /api/remove: the image as `file`, its parameters in the form",
    "security": [{"bearer": []}],
    "parameters": QUERY,
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": string(format="binary"), **REMBG_PARAMETERS},
                    "additionalProperties": False,
                }
            }
        },
    },
    "responses": REMBG_ANSWERS,
}
REMBG_GET = {
    "summary": "rembg's GET /api/remove?url=: an image by URL (only from CVUNET_IMAGE_URL_HOSTS)",
    "security": [{"bearer": []}],
    "parameters": [
        {"name": "url", "in": "query", "required": True, "schema": string()},
        *QUERY,
        *({"name": name, "in": "query", "schema": schema} for name, schema in REMBG_PARAMETERS.items()),
    ],
    "responses": REMBG_ANSWERS,
}


@cache
def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "cvunet-matting: drop-in endpoints",
            "version": __version__,
            "description": "remove.bg's and rembg's APIs, as this server takes them (README: Switching from"
            " remove.bg / rembg). The rest of the API: /api/v1/openapi.json.",
        },
        "paths": {
            "/v1.0/removebg": {"post": REMOVEBG},
            "/v1.0/account": {"get": ACCOUNT},
            "/api/remove": {"get": REMBG_GET, "post": REMBG_POST},
        },
        "components": {
            "securitySchemes": {
                "removebgKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            }
        },
    }
