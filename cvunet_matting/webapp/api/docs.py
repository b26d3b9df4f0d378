"""The OpenAPI document as a page a person reads: each operation with its parameters, form fields and
answers, drawn from the same document /api/v1/openapi.json serves (no script, nothing fetched)."""

from __future__ import annotations

from .openapi import document


def _type(schema: dict) -> str:
    """A schema in a few words: integer 0-255, string (binary), one of png, webp, jpg..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "enum" in schema:
        return "one of " + ", ".join(str(v) for v in schema["enum"])
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    bounds = (schema.get("minimum"), schema.get("maximum"))
    if None not in bounds:
        return f"{kind} {bounds[0]:g}-{bounds[1]:g}"
    return f"{kind} ({schema['format']})" if "format" in schema else kind


def _fields(operation: dict) -> list[dict]:
    """The request body's fields: a form's parts, or a JSON body's schema name."""
    body = operation.get("requestBody")
    if not body:
        return []
    media, content = next(iter(body["content"].items()))
    schema = content["schema"]
    if "properties" not in schema:
        return [{"name": media, "type": _type(schema), "required": True, "description": ""}]
    required = set(schema.get("required", []))
    return [
        {"name": name, "type": _type(prop), "required": name in required, "description": prop.get("description", "")}
        for name, prop in schema["properties"].items()
    ]


def _parameters(operation: dict) -> list[dict]:
    return [
        {
            "name": p["name"],
            "where": p["in"],
            "type": _type(p["schema"]),
            "required": p.get("required", False),
            "description": p.get("description", ""),
        }
        for p in operation.get("parameters", [])
    ]


def operations() -> list[dict]:
    """Every operation, in the document's order, ready for the page."""
    doc = document()
    found = []
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            answers = [(status, r["description"]) for status, r in sorted(operation["responses"].items())]
            found.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": operation["summary"],
                    "public": operation.get("security") == [],
                    "parameters": _parameters(operation),
                    "fields": _fields(operation),
                    "answers": answers,
                }
            )
    return found
