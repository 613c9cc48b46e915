"""The OpenAPI 3.1 description of the HTTP API, served at ``GET /api/openapi.json``.

tests/test_api_openapi.py checks that it is valid, that its paths and methods are exactly
``routes.ROUTES``, and fuzzes the running API from it (schemathesis): no 500, no answer outside it.
The schemas say what the checks in ``bodies.py`` enforce; where a rule is not expressible (a user
id must also be printable and not begin with ``conns:``, ``ctl:`` or ``worker:``) the description
says it and the API answers 400.
"""

from __future__ import annotations

from typing import Any

from gateway.api.bodies import MAX_BATCH, MAX_IDEMPOTENCY_KEY, MAX_ONLINE_USERS


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


# Every answer an operation with a JSON body may give besides its 200.
_ERRORS = {
    "400": _error("The body is not JSON, or not what the operation takes: `error` says why."),
    "401": _error("No `Authorization: Bearer <key>` header with one of `WEBSOCKET_API_KEYS`."),
    "405": _error("Another method than the operation's."),
    "408": _error("The body did not arrive within `WEBSOCKET_HANDSHAKE_TIMEOUT`."),
    "413": _error(
        "The body is over `WEBSOCKET_API_MAX_BODY_SIZE` (`body_too_large`), a message over"
        " `WEBSOCKET_MAX_PAYLOAD_SIZE` (`payload_too_large`), a list over its bound, or the body"
        " holds more JSON values than it may (`too_many_values`)."
    ),
    "415": _error("The content type is not `application/json`."),
    "503": _error(
        "Redis did not answer (`redis_unavailable`); a publish may have gone out: retry, with the same"
        " idempotency key to publish at most once."
    ),
}

_USER_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 256,
    "pattern": "^[^\\s{}]+$",
    "description": "A user id as in the token's `sub`: printable, no spaces or braces, and not"
    " beginning with `conns:`, `ctl:` or `worker:`.",
}

_PUBLISH_BODY = {
    "type": "object",
    "properties": {
        "user": _USER_ID,
        "group": {
            **_USER_ID,
            "description": "A group id (as a user id, and not `*`): every connection whose token's"
            " `groups` claim names it.",
        },
        "broadcast": {"const": True, "description": "Every connection."},
        "data": {
            "description": "Any JSON value. A string is sent as the string, anything else as compact"
            " JSON, as the publisher library sends it."
        },
        "history": {
            "type": "boolean",
            "default": True,
            "description": "Write the message to the target's history (the user's, the group's or the"
            " broadcast's).",
        },
        "idempotency_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY,
            "pattern": "^[!-~]+$",
            "description": "Printable ASCII, no spaces. The same key for the same target within"
            " `WEBSOCKET_API_HISTORY_TTL` publishes once and answers the first publish again."
            " Needs history.",
        },
    },
    "required": ["data"],
    "oneOf": [{"required": ["user"]}, {"required": ["group"]}, {"required": ["broadcast"]}],
    "additionalProperties": False,
}

_PUBLISH_RESULT = {
    "type": "object",
    "properties": {
        "receivers": {"type": "integer", "minimum": 0, "description": "Gateway workers that received it."},
        "position": {
            "type": ["string", "null"],
            "description": "The message's place in the target's history (a user's: a `?since=`);"
            " null without.",
        },
        "repeated": {
            "const": True,
            "description": "Present when an idempotency key was seen before: nothing was published.",
        },
    },
    "required": ["receivers", "position"],
    "additionalProperties": False,
}

_SCHEMAS = {
    "Error": {
        "type": "object",
        "properties": {"error": {"type": "string"}},
        "required": ["error"],
        "additionalProperties": False,
    },
    "PublishBody": _PUBLISH_BODY,
    "PublishResult": _PUBLISH_RESULT,
    "BatchBody": {
        "type": "object",
        "properties": {"messages": {"type": "array", "maxItems": MAX_BATCH, "items": _ref("PublishBody")}},
        "required": ["messages"],
        "additionalProperties": False,
    },
    "BatchResult": {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "description": "One per message, in order: its result, or its error.",
                "items": {"oneOf": [_ref("PublishResult"), _ref("Error")]},
            }
        },
        "required": ["results"],
        "additionalProperties": False,
    },
    "DisconnectBody": {
        "type": "object",
        "properties": {"user": _USER_ID},
        "required": ["user"],
        "additionalProperties": False,
    },
    "DisconnectResult": {
        "type": "object",
        "properties": {"disconnected": {"type": "integer", "minimum": 0}},
        "required": ["disconnected"],
        "additionalProperties": False,
    },
    "OnlineBody": {
        "type": "object",
        "properties": {"users": {"type": "array", "maxItems": MAX_ONLINE_USERS, "items": _USER_ID}},
        "required": ["users"],
        "additionalProperties": False,
    },
    "OnlineResult": {
        "type": "object",
        "properties": {
            "online": {
                "type": "object",
                "additionalProperties": {"type": "integer", "minimum": 0},
                "description": "Live connections per user asked, cluster-wide.",
            }
        },
        "required": ["online"],
        "additionalProperties": False,
    },
}


def _post(summary: str, body: str, result: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(body)}}},
            "responses": {
                "200": {"description": "Done.", "content": {"application/json": {"schema": _ref(result)}}},
                **_ERRORS,
            },
        }
    }


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "WebSocket gateway HTTP API",
        "version": "1",
        "description": "Publish to users, disconnect them and ask who is online, from any language."
        " Off unless WEBSOCKET_API_KEYS is set.",
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/publish": _post("Publish one message.", "PublishBody", "PublishResult"),
        "/api/publish/batch": _post(
            f"Publish up to {MAX_BATCH:,} messages in one round trip per Redis node.",
            "BatchBody",
            "BatchResult",
        ),
        "/api/disconnect": _post(
            "Close every connection of a user (4003) and refuse its older tokens.",
            "DisconnectBody",
            "DisconnectResult",
        ),
        "/api/online": _post(
            f"Live connections of up to {MAX_ONLINE_USERS:,} users.", "OnlineBody", "OnlineResult"
        ),
        "/api/openapi.json": {
            "get": {
                "summary": "This description.",
                "responses": {
                    "200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {}}}},
                    "401": _ERRORS["401"],
                    "405": _ERRORS["405"],
                },
            }
        },
    },
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}
