"""Generic gRPC -> HTTP/JSON transcoding from the ``google.api.http`` rules, in
the manner of grpc-gateway: every annotated RPC of the generated ``agentapi.v1``
package is served without bridge code.

A request becomes the RPC's input message from, in order, the body (per the
rule's ``body``), the path variables, then query parameters for the fields
neither binds. Field names are accepted as proto or lowerCamel names; replies
use the protobuf JSON mapping (lowerCamel). Server-streaming RPCs answer SSE.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import logging
import pkgutil
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.api import annotations_pb2
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from sse_starlette import EventSourceResponse
from starlette._utils import get_route_path  # what Starlette's own routes match on (root_path removed)
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound
from starlette.types import Receive, Scope, Send

import agentapi.v1
from gateway.bridge import REQUEST_ID_HEADER, request_id
from gateway.errors import ApiError, bad_request, error_response, from_rpc_error, metadata_value

log = logging.getLogger(__name__)

FORWARDED_HEADERS = ("authorization", "idempotency-key")
# agentapi's own REST mapping lives under /agentapi/v1 (the protos' rules) so that
# OpenAI's /v1/conversations can win. The paths it had before, under /v1, stay as
# deprecated aliases where no OpenAI surface claims them.
PREFIX, LEGACY_PREFIX = "/agentapi/v1/", "/v1/"
# SSE's reconnection header, read as the field it stands for (StreamTurn's rejoin point).
RESUME_HEADERS = {"agentapi.v1.SessionService.StreamTurn": ("last-event-id", "after_sequence_number")}
OPENAI_CLAIMED = ("/v1/conversations", "/v1/responses", "/v1/models", "/v1/chat")
FIELD_MASK = "google.protobuf.FieldMask"
# Messages whose JSON form is a scalar, so a path or query parameter can carry them.
SCALAR_MESSAGES = {"google.protobuf.Timestamp", "google.protobuf.Duration", FIELD_MASK} | {
    f"google.protobuf.{kind}Value"
    for kind in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String")
}
VARIABLE = re.compile(r"\{([\w.]+)(?:=([^}]*))?\}")
# json_format names the failing field as "at Message.a.b[0].c"; the part after the message is the param.
PARSE_ERROR_FIELD = re.compile(r' at "?\w+\.([\w.\[\]]+)')


@dataclass(frozen=True)
class Binding:
    """One HTTP rule of one RPC: ``verb`` (``GET``, ``POST``...), ``template``
    (``/agentapi/v1/agents/{agent.id}``), ``body`` (``""``, ``"*"`` or a field name),
    the path variables as proto field paths, and the compiled path matcher."""

    service: ServiceDescriptor
    method: MethodDescriptor
    verb: str
    template: str
    body: str
    variables: tuple[str, ...]
    pattern: re.Pattern[str]
    successor: str = ""  # set on a deprecated alias: the template that replaced it

    @property
    def rpc(self) -> str:
        """The gRPC method path, ``/agentapi.v1.AgentService/GetAgent``."""
        return f"/{self.service.full_name}/{self.method.name}"


def resolve(message: Descriptor, path: str) -> list[FieldDescriptor]:
    """The fields along a dotted path of proto or JSON names, ending in a field a
    string can carry (scalar, enum, scalar well-known type, or repeated of those).
    Raises KeyError for anything else."""
    fields: list[FieldDescriptor] = []
    for name in path.split("."):
        if fields:
            parent = fields[-1]
            if parent.message_type is None or parent.message_type.full_name in SCALAR_MESSAGES or parent.is_repeated:
                raise KeyError(path)
            message = parent.message_type
        field = message.fields_by_name.get(name) or {f.json_name: f for f in message.fields}.get(name)
        if field is None:
            raise KeyError(path)
        fields.append(field)
    if fields[-1].message_type is not None and fields[-1].message_type.full_name not in SCALAR_MESSAGES:
        raise KeyError(path)
    return fields


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``/v1/a/{x}:verb`` -> a full-match regex with groups v0, v1... and the variable paths."""
    regex, variables, position = "", [], 0
    for match in VARIABLE.finditer(template):
        segments = (match.group(2) or "*").split("/")
        inner = "/".join("[^/]+" if s == "*" else ".+" if s == "**" else re.escape(s) for s in segments)
        regex += re.escape(template[position : match.start()]) + f"(?P<v{len(variables)}>{inner})"
        variables.append(match.group(1))
        position = match.end()
    return re.compile(regex + re.escape(template[position:])), tuple(variables)


def _binding(service: ServiceDescriptor, method: MethodDescriptor, rule: Any) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("the rule has no path")
    verb, template = (rule.custom.kind, rule.custom.path) if kind == "custom" else (kind, getattr(rule, kind))
    pattern, variables = _compile(template)
    if any(resolve(method.input_type, v)[-1].is_repeated for v in variables):
        raise ValueError("a path variable is a repeated field")
    if rule.body not in ("", "*") and rule.body not in method.input_type.fields_by_name:
        raise ValueError(f"body field {rule.body} does not exist")
    if method.client_streaming:
        raise ValueError("client streaming cannot be transcoded")
    if rule.response_body:
        raise ValueError("response_body is not supported")
    return Binding(service, method, verb.upper(), template, rule.body, variables, pattern)


def services() -> list[ServiceDescriptor]:
    """Every service of the generated ``agentapi.v1`` package, by full name."""
    found: dict[str, ServiceDescriptor] = {}
    for module in pkgutil.iter_modules(agentapi.v1.__path__):
        if module.name.endswith("_pb2"):
            descriptor = importlib.import_module(f"agentapi.v1.{module.name}").DESCRIPTOR
            found.update({s.full_name: s for s in descriptor.services_by_name.values()})
    return [found[name] for name in sorted(found)]


@functools.cache
def scan() -> tuple[tuple[Binding, ...], dict[str, str]]:
    """Every servable HTTP rule (additional bindings included), and the RPCs that
    cannot be served as ``{"/pkg.Service/Method": reason}``."""
    bindings: list[Binding] = []
    problems: dict[str, str] = {}
    for service in services():
        for method in service.methods:
            name = f"/{service.full_name}/{method.name}"
            if not method.GetOptions().HasExtension(annotations_pb2.http):
                problems[name] = "no google.api.http rule"
                continue
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            try:
                bindings += [_binding(service, method, r) for r in (rule, *rule.additional_bindings)]
            except (KeyError, ValueError) as exc:
                problems[name] = f"unservable rule: {exc}"
    return tuple(bindings), problems


def legacy_aliases(bindings: tuple[Binding, ...]) -> list[Binding]:
    """The deprecated ``/v1/...`` alias of each binding under ``/agentapi/v1/``
    whose old path no OpenAI surface has taken; answered with a ``Deprecation``
    header and a ``Link`` to the successor, and left out of ``/openapi.json``."""
    aliases = []
    for binding in bindings:
        if not binding.template.startswith(PREFIX):
            continue
        template = LEGACY_PREFIX + binding.template.removeprefix(PREFIX)
        if template.startswith(OPENAI_CLAIMED):
            continue
        pattern, _ = _compile(template)
        aliases.append(dataclasses.replace(binding, template=template, pattern=pattern, successor=binding.template))
    return aliases


def _parse(data: Any, message: Any, param: str | None = None) -> None:
    try:
        json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        found = PARSE_ERROR_FIELD.search(str(exc))
        raise bad_request(str(exc), param or (found.group(1).rstrip(".") if found else None)) from exc


def assign(message: Any, path: str, values: list[str], param: str) -> None:
    """Sets the field at ``path`` (see :func:`resolve`) of ``message`` from the
    strings of a path or query parameter, through the JSON mapping so numbers,
    enums, timestamps and masks parse as in a body; several values only for a
    repeated field. Raises KeyError for a path that cannot take a string, and
    :class:`ApiError` (400, ``param``) for a value of the wrong type."""
    fields = resolve(message.DESCRIPTOR, path)
    leaf = fields[-1]
    if leaf.message_type is not None and leaf.message_type.full_name == FIELD_MASK:
        # The JSON form wants lowerCamel paths; callers also write proto names.
        camel = [re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for v in values for p in v.split(",")]
        values = [",".join(p for p in camel if p)]
    if leaf.type == FieldDescriptor.TYPE_BOOL or (leaf.message_type and leaf.message_type.name == "BoolValue"):
        # JSON wants a bare true/false; a query string only has text.
        booleans = {"true": True, "1": True, "false": False, "0": False}
        if any(v.lower() not in booleans for v in values):
            raise bad_request(f"{param} must be true or false", param)
        values = [booleans[v.lower()] for v in values]  # type: ignore[misc]
    if not leaf.is_repeated and len(values) > 1:
        raise bad_request(f"{param} is given more than once", param)
    value: Any = values if leaf.is_repeated else values[0]
    for field in reversed(fields):
        value = {field.name: value}
    _parse(value, message, param)


async def build_request(binding: Binding, request: Request) -> Any:
    """The RPC's input message from the request. Raises :class:`ApiError` (400)
    for bad JSON, unknown or misplaced parameters and values of the wrong type."""
    message = message_factory.GetMessageClass(binding.method.input_type)()
    if binding.body:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise bad_request("the body is not valid JSON") from exc
        if binding.body == "*" and not isinstance(data, dict):
            raise bad_request("the body must be a JSON object")
        _parse(data if binding.body == "*" else {binding.body: data}, message)
    for variable in binding.variables:
        assign(message, variable, [request.path_params[variable]], variable)
    header = RESUME_HEADERS.get(binding.method.full_name)
    if header and request.headers.get(header[0]):  # the query parameter, when also given, wins below
        assign(message, header[1], [request.headers[header[0]]], header[0])
    for key in dict.fromkeys(request.query_params.keys()):
        try:
            path = ".".join(f.name for f in resolve(binding.method.input_type, key))
        except KeyError:
            raise bad_request(f"unknown query parameter {key}", key) from None
        if binding.body == "*" or path in binding.variables or f"{path}.".startswith(f"{binding.body}."):
            raise bad_request(f"{key} is bound by the path or body, not the query", key)
        assign(message, path, request.query_params.getlist(key), key)
    return message


def _json(message: Any) -> str:
    return json.dumps(
        json_format.MessageToDict(message, always_print_fields_with_no_presence=True), separators=(",", ":")
    )


async def _event_stream(call: Any) -> Response:
    """Reads the first message before answering, so a call that fails at once
    (not found, unauthenticated) still gets its HTTP status; a later failure is
    one ``event: error`` with the OpenAI error body, then the end."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))

    async def events() -> AsyncIterator[dict[str, str]]:
        try:
            item = first
            while item is not grpc.aio.EOF:
                event = {"data": _json(item)}
                if sequence := getattr(item, "sequence_number", 0):
                    event["id"] = str(sequence)  # a reconnecting EventSource sends it back as Last-Event-ID
                yield event
                item = await call.read()
        except grpc.aio.AioRpcError as exc:
            yield {"event": "error", "data": json.dumps(from_rpc_error(exc).body)}
        finally:
            call.cancel()  # no-op after the end; stops the RPC when the client went away

    return EventSourceResponse(events(), sep="\n", ping=15)


async def call(binding: Binding, request: Request) -> Response:
    """Serves one HTTP request through ``binding``: 200 with the reply's JSON
    (SSE for server streaming), or the OpenAI error body with the mapped status."""
    try:
        message = await build_request(binding, request)
        forwarded = ((h, metadata_value(h, request.headers[h])) for h in FORWARDED_HEADERS if h in request.headers)
        metadata = tuple((h, v) for h, v in forwarded if v is not None)
        if rid := request_id(request):
            metadata += ((REQUEST_ID_HEADER, rid),)
    except ApiError as exc:
        return error_response(exc)
    channel: grpc.aio.Channel = request.app.state.bridge.channel  # opened in the lifespan
    reply_class = message_factory.GetMessageClass(binding.method.output_type)
    kind = channel.unary_stream if binding.method.server_streaming else channel.unary_unary
    stub = kind(
        binding.rpc, request_serializer=type(message).SerializeToString, response_deserializer=reply_class.FromString
    )
    if binding.method.server_streaming:
        return await _event_stream(stub(message, metadata=metadata))
    try:
        reply = await stub(message, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return error_response(from_rpc_error(exc))
    return Response(_json(reply), media_type="application/json")


class TranscodedRoute(BaseRoute):
    """A Starlette route for one binding. Matches by regex because Starlette's
    path syntax has no dotted names or ``:verb`` suffixes."""

    def __init__(self, binding: Binding) -> None:
        self.binding = binding

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        found = self.binding.pattern.fullmatch(get_route_path(scope)) if scope["type"] == "http" else None
        if found is None:
            return Match.NONE, {}
        params = {v: found.group(f"v{i}") for i, v in enumerate(self.binding.variables)}
        return (Match.FULL if scope["method"] == self.binding.verb else Match.PARTIAL), {"path_params": params}

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != self.binding.verb:
            raise HTTPException(405)
        response = await call(self.binding, Request(scope, receive))
        if self.binding.successor:  # RFC 9745's header, and where the route went
            response.headers["Deprecation"] = "true"
            response.headers["Link"] = f'<{self.binding.successor}>; rel="successor-version"'
        await response(scope, receive, send)


def routes() -> list[BaseRoute]:
    """One route per servable binding. Routes with a custom verb go first, then
    those with fewer variables, so ``{id}`` cannot swallow ``{id}:verb`` or a
    literal segment. Unservable RPCs are logged (and fail tests/test_transcoding.py)."""
    bindings, problems = scan()
    for rpc, reason in problems.items():
        log.warning("%s is not served over HTTP: %s", rpc, reason)
    ordered = sorted(bindings, key=lambda b: (not re.search(r":[^/}]*$", b.template), len(b.variables)))
    return [TranscodedRoute(b) for b in (*ordered, *legacy_aliases(tuple(ordered)))]
