"""The OpenAPI description of `POST /caption` (shown at /api/docs): the multipart `image` file field and one query
parameter per decoding option, typed from `GenerationConfig`'s fields with their default, range and help. The
handler reads the request itself; this only describes it, from the same declarations."""

from __future__ import annotations

from typing import Any

from captioner.options import Spec

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}
ANSWERS = {
    "200": "one row per image, in order: path (the upload's file name), caption, score; n_best and truncated when so",
    "400": "a file that is not an image or is truncated, no `image` field, a body that is not multipart",
    "411": "no Content-Length",
    "413": "an upload over the size limit, an image over the pixel limit, or images together over the request limit",
    "422": "an unknown, repeated or bad decoding option, or one out of its range",
    "503": "the queue is full: retry after Retry-After seconds",
    "504": "not answered within the request timeout (reading, decoding and captioning all count)",
}


def parameter(spec: Spec, cap: float | None) -> dict[str, Any]:
    """A query parameter: its type, default (an unset one is left out of the document) and range (narrowed by the
    server's `cap`)."""
    option = spec.option
    schema: dict[str, Any] = {"type": JSON_TYPES[spec.kind], "default": option.default}
    if option.low is not None and option.high is not None:
        schema |= {"minimum": option.low, "maximum": option.high if cap is None else min(option.high, cap)}
    if option.choices:
        schema["enum"] = list(option.choices)
    why = f" ({option.why})" if option.why else ""
    return {"name": spec.name, "in": "query", "required": False, "description": option.help + why, "schema": schema}


def caption_openapi(options: dict[str, Spec], caps: dict[str, int], max_images: int) -> dict[str, Any]:
    """What FastAPI's `openapi_extra` adds to the operation: parameters, request body, answers."""
    files = f"the image files (JPEG, PNG, WebP, ...), 1 to {max_images}, each a field named `image`"
    image = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "minItems": 1,
        "maxItems": max_images,
        "description": files,
    }
    body = {"type": "object", "required": ["image"], "properties": {"image": image}}
    return {
        "parameters": [parameter(spec, caps.get(name)) for name, spec in options.items()],
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}},
        "responses": {status: {"description": text} for status, text in ANSWERS.items()},
    }
