"""OpenAPI 3.1 descriptions of the services: the pieces they share and the blueprint serving them.

Each service describes its endpoints declaratively in its own ``openapi.py``, with these helpers
for what all of them have in common:

* the JSON error body every error renders as (``{"error": message, "type": class name}``, see
  :func:`common.service.app.register_error_handlers`) and one reusable response per error status;
* the ``bearerAuth`` security scheme of :mod:`common.service.auth`, mandatory or optional, with the roles
  an endpoint admits in the ``x-roles`` extension (a bearer token alone does not say whose);
* the protocol's shapes: ciphertexts, public keys, the slot layout and the job spec;
* ``GET /health`` and ``GET /openapi.json`` themselves.

Limits in the schemas are taken from the constants the code checks against (e.g.
:data:`common.protocol.wire.MAX_VECTOR_LENGTH`), so the description cannot silently drift from the checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, jsonify

from common.protocol.models import MODELS
from common.crypto.paillier import ALLOWED_KEY_BITS
from common.protocol.spec import JOB_ID_PATTERN, MAX_FEATURES, ROUND_KINDS
from common.protocol.wire import MAX_VECTOR_LENGTH

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"

ERROR_RESPONSES = {
    400: (
        "BadRequest",
        "The request is unusable: malformed JSON, a missing or mistyped field, an invalid"
        " ciphertext, or a key fingerprint that is not the job's.",
    ),
    401: ("Unauthorized", "Missing or unknown credentials (send 'Authorization: Bearer <token>')."),
    403: ("Forbidden", "Valid credentials of a party whose role may not call this endpoint."),
    404: ("NotFound", "Unknown job, model or round."),
    409: ("Conflict", "The job, round or model is in another state than this request needs."),
    413: ("PayloadTooLarge", "The body is larger than the service's MAX_CONTENT_LENGTH."),
    422: (
        "Unprocessable",
        "A well-formed request that cannot be served: the data, the fixed-point encoding or"
        " the job's rules do not allow it.",
    ),
    502: ("UpstreamFailure", "Another party could not be reached, timed out or answered with an error."),
}
"""Status → (name under ``components.responses``, what it means), as in :mod:`common.protocol.errors`."""

# The largest ciphertext on the wire: an element of Z_{n²} for the largest key, base64-encoded.
_MAX_CIPHERTEXT_BYTES = 2 * max(ALLOWED_KEY_BITS) // 8
_MAX_CIPHERTEXT_CHARS = 4 * -(-_MAX_CIPHERTEXT_BYTES // 3)
_BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def ref(name: str) -> dict[str, str]:
    """A reference to ``components.schemas[name]``."""
    return {"$ref": f"#/components/schemas/{name}"}


def error_schema() -> dict[str, Any]:
    """The body of every error response."""
    return {
        "type": "object",
        "required": ["error", "type"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, naming the offending field."},
            "type": {"type": "string", "description": "The error's class, e.g. SchemaError or NotFound."},
        },
    }


def error_responses(*statuses: int) -> dict[str, dict[str, str]]:
    """The documented error responses of an operation, by status, as references."""
    return {str(status): {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"} for status in statuses}


def json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def json_response(description: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": json_content(schema)}


def json_request(schema: Mapping[str, Any], required: bool = True, description: str | None = None) -> dict[str, Any]:
    """A JSON request body."""
    body: dict[str, Any] = {"required": required, "content": json_content(schema)}
    if description:
        body["description"] = description
    return body


def bearer_security(*roles: str, optional: bool = False) -> dict[str, Any]:
    """``security`` and ``x-roles`` of an operation open to bearer tokens of ``roles``.

    Merge into an operation with ``**``. ``optional`` declares an endpoint open unless the service
    is configured with a token (the model creator's user API and its ``API_TOKEN``).
    """
    requirement = [{"bearerAuth": []}]
    return {"security": [{}, *requirement] if optional else requirement, "x-roles": list(roles)}


def no_security() -> dict[str, Any]:
    """``security`` of an operation anyone may call."""
    return {"security": []}


def path_parameter(name: str, schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": dict(schema)}


def job_id_parameter(description: str = "The job's id.") -> dict[str, Any]:
    return path_parameter("job_id", ref("JobId"), description)


def object_schema(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    """An object schema with ``properties``, of which ``required`` must be present; others may follow."""
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    required = list(required)
    if required:
        schema["required"] = required
    return schema


def protocol_schemas() -> dict[str, Any]:
    """The shapes every party exchanges (:mod:`common.protocol.wire`, :mod:`common.crypto.paillier`, :mod:`common.protocol.spec`)."""
    return {
        "JobId": {
            "type": "string",
            "pattern": JOB_ID_PATTERN.pattern,
            "minLength": 1,
            "maxLength": 64,
            "description": "A job's id: letters, digits, '-' and '_'.",
        },
        "RoundKind": {
            "type": "string",
            "enum": list(ROUND_KINDS),
            "description": "A gradient round (encrypted weights in, encrypted gradients out) or a"
            " statistics round (feature sums, for standardisation).",
        },
        "RoundNumber": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
        "KeyFingerprint": {
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "SHA-256 of the key's modulus n, in hexadecimal: names the job's key.",
        },
        "Ciphertext": {
            "type": "string",
            "format": "byte",
            "contentEncoding": "base64",
            "pattern": _BASE64_PATTERN,
            "maxLength": _MAX_CIPHERTEXT_CHARS,
            "description": "A Paillier ciphertext: base64 of its fixed-width big-endian bytes (the"
            " width of n²); it must satisfy 0 < c < n² and gcd(c, n) = 1.",
        },
        "Ciphertexts": {
            "type": "array",
            "items": ref("Ciphertext"),
            "minItems": 1,
            "maxItems": MAX_VECTOR_LENGTH,
            "description": "A vector of ciphertexts under the job's key; its length is fixed by the job spec.",
        },
        "PublicKey": object_schema(
            {
                "n": {
                    "type": "string",
                    "pattern": "^[0-9a-f]+$",
                    "minLength": min(ALLOWED_KEY_BITS) // 4,
                    "maxLength": max(ALLOWED_KEY_BITS) // 4,
                    "description": "The modulus n in hexadecimal: odd, of "
                    f"{', '.join(map(str, ALLOWED_KEY_BITS))} bits.",
                },
                "fingerprint": ref("KeyFingerprint"),
            },
            ["n"],
        )
        | {"description": "A Paillier public key (g = n + 1); a fingerprint, if given, must be n's."},
        "SlotLayout": object_schema(
            {
                name: {"type": "integer", "minimum": 1, "maximum": 4096}
                for name in ("value_bits", "count_bits", "slots_per_ciphertext")
            },
            ["value_bits", "count_bits", "slots_per_ciphertext"],
        )
        | {"description": "How signed values are packed into the slots of one plaintext; must fit the key."},
        "JobSpec": object_schema(
            {
                "job_id": ref("JobId"),
                "model": {"type": "string", "enum": list(MODELS)},
                "features": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_FEATURES,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                },
                "label": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "description": "The label column; not one of the features.",
                },
                "data_frac_bits": {"type": "integer", "minimum": 0, "maximum": 256},
                "weight_frac_bits": {"type": "integer", "minimum": 0, "maximum": 256},
                "weight_bits": {"type": "integer", "minimum": 1, "maximum": 256},
                "layout": ref("SlotLayout"),
                "min_data_owners": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": 100_000,
                    "description": "At most what the layout's count bits can count.",
                },
                "key_fingerprint": ref("KeyFingerprint"),
            },
            [
                "job_id",
                "model",
                "features",
                "label",
                "data_frac_bits",
                "weight_frac_bits",
                "weight_bits",
                "layout",
                "min_data_owners",
                "key_fingerprint",
            ],
        )
        | {"description": "What a job computes and how its numbers are encoded (common.protocol.spec.JobSpec)."},
    }


def components(schemas: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``components``: the error schema and responses, the protocol schemas, ``schemas`` and bearerAuth."""
    return {
        "schemas": {"Error": error_schema(), **protocol_schemas(), **(schemas or {})},
        "responses": {name: json_response(description, ref("Error")) for name, description in ERROR_RESPONSES.values()},
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "A credential of the calling party (common.service.auth); which one is in each operation's"
                " x-roles.",
            }
        },
    }


def service_paths() -> dict[str, Any]:
    """``GET /health`` and ``GET /openapi.json``, which every service has and anyone may call."""
    return {
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness: 200 once the service is serving.",
                "tags": ["service"],
                **no_security(),
                "responses": {
                    "200": json_response(
                        "The service is up.", object_schema({"status": {"type": "string", "const": "ok"}}, ["status"])
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This OpenAPI description.",
                "tags": ["service"],
                **no_security(),
                "responses": {
                    "200": json_response(
                        "An OpenAPI 3.1 document.",
                        object_schema(
                            {"openapi": {"type": "string"}, "info": {"type": "object"}, "paths": {"type": "object"}},
                            ["openapi", "info", "paths"],
                        ),
                    )
                },
            }
        },
    }


def document(
    title: str,
    description: str,
    paths: Mapping[str, Any],
    schemas: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A service's whole OpenAPI document.

    It holds the service's ``paths``, ``schemas`` and ``tags`` (name → description) plus what all
    services share.
    """
    all_tags = {"service": "Health and this description.", **(tags or {})}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": API_VERSION, "description": description},
        "tags": [{"name": name, "description": text} for name, text in all_tags.items()],
        "paths": {**service_paths(), **paths},
        "components": components(schemas),
    }


def openapi_blueprint(document: Mapping[str, Any]) -> Blueprint:
    """A blueprint serving ``document`` at ``GET /openapi.json``, without authentication.

    The description holds nothing secret: no token, key or data, only the shapes of requests.
    """
    blueprint = Blueprint("openapi", __name__)
    served = dict(document)

    @blueprint.get("/openapi.json")
    def openapi() -> tuple[Any, int]:
        return jsonify(served), 200

    return blueprint
