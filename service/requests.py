"""Request bodies: strict JSON parsing and the pydantic models, whose limits come from the settings.

Bodies are parsed here rather than by FastAPI: orjson is strict and fast (no NaN/Infinity, no lone
surrogates, no invalid UTF-8); what it refuses is parsed once more by the lenient standard parser so
that the error can name the field (`"timestamp": 1e999` says `timestamp`, not "byte 42"). Since
FastAPI never sees these bodies, `RequestModels.document` writes them into the OpenAPI document."""

import copy
import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Container, NamedTuple

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from service.errors import InvalidFields, InvalidInput, MalformedBody
from service.settings import Settings

# Event timestamps are unix seconds in [0, 2100-01-01T00:00:00Z]; anything else is a bug upstream.
MIN_TIMESTAMP = 0
MAX_TIMESTAMP = 4_102_444_800
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
# Past 2**53 a float no longer says which integer it was (the JSON parser turns integers beyond 64
# bits into floats), so such a float is refused rather than rounded into a valid id.
FLOAT_EXACT_INTEGERS = 2 ** 53
# A numeric feature's value beyond this magnitude is no measurement but a bug (or an attack): refused.
MAX_FEATURE_NUMBER = 1e15


def parse_body(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as strict_error:
        try:
            return json.loads(raw)   # valid to the lenient parser: the models name the bad field
        except (ValueError, RecursionError):
            raise MalformedBody(f"the body is not valid JSON: {strict_error}", "body") from None


def _text(value: Any, max_length: int) -> str:
    if type(value) is not str:
        raise ValueError("must be a string")
    if not value:
        raise ValueError("must not be empty")
    if len(value) > max_length:
        raise ValueError(f"must be at most {max_length} characters long")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _raw_id(value: Any, max_length: int) -> str | int:
    """A string or a 64-bit integer (not a bool, not 1.5)."""
    if type(value) is float and value.is_integer() and abs(value) <= FLOAT_EXACT_INTEGERS:
        value = int(value)      # JSON Schema's integer: 7.0 is the integer 7 (so it names the same id as 7)
    if type(value) is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("must be a 64-bit integer")
        return value
    if type(value) is not str:
        raise ValueError("must be a string or an integer")
    return _text(value, max_length)


def _feature_value(value: Any, max_length: int) -> str | int | float:
    """A feature's value: a raw id (categorical features) or a finite number (numeric ones); which
    one a feature takes is checked against the serving model in `RequestModels.score`."""
    if type(value) is float:
        _check_magnitude(value)
        if not value.is_integer():
            return value
    try:
        return _raw_id(value, max_length)
    except ValueError:
        raise ValueError("must be a string, an integer or (for a numeric feature) a number") from None


def _check_magnitude(value: int | float) -> None:
    if not abs(value) <= MAX_FEATURE_NUMBER:     # NaN fails it too; big ints compare exactly
        raise ValueError(f"must be a finite number of magnitude at most {MAX_FEATURE_NUMBER:g}")


def _numeric_feature(value: str | float) -> float:
    if type(value) not in (int, float):
        raise ValueError("is a numeric feature: must be a JSON number")
    _check_magnitude(value)
    return float(value)


def _unix_seconds(value: Any) -> float:
    if type(value) not in (int, float):
        raise ValueError("must be a number (unix seconds)")
    if not (MIN_TIMESTAMP <= value <= MAX_TIMESTAMP and math.isfinite(value)):   # big ints compare exactly
        raise ValueError(f"must be finite unix seconds in [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}]")
    return float(value)


class ScoreInputs(NamedTuple):
    user_id: str
    scenario: str
    candidates: list[str]
    features: dict[str, str | float]    # raw ids as text; numeric features as floats


@dataclass(frozen=True)
class RequestModels:
    score_request: type[BaseModel]
    event: type[BaseModel]
    events_adapter: TypeAdapter
    score_response: type[BaseModel]
    events_response: type[BaseModel]

    @classmethod
    def for_settings(cls, settings: Settings) -> "RequestModels":
        id_length = settings.max_id_length
        text = Annotated[str, PlainValidator(lambda v: _text(v, id_length)),
                         WithJsonSchema({"type": "string", "minLength": 1, "maxLength": id_length})]
        raw_id = Annotated[str | int, PlainValidator(lambda v: _raw_id(v, id_length)), WithJsonSchema({
            "description": "a raw id: a non-empty string or a 64-bit integer",
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": id_length},
                      {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}]})]
        # documented as a raw id; `with_scenarios` documents the serving model's numeric features
        feature_value = Annotated[str | int | float, PlainValidator(lambda v: _feature_value(v, id_length)),
                                  WithJsonSchema({
            "description": "a categorical feature's raw id: a non-empty string or a 64-bit integer",
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": id_length},
                      {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX}]})]
        unix_seconds = Annotated[float, PlainValidator(_unix_seconds), WithJsonSchema({
            "type": "number", "minimum": MIN_TIMESTAMP, "maximum": MAX_TIMESTAMP,
            "description": f"unix seconds in [{MIN_TIMESTAMP}, {MAX_TIMESTAMP}] (up to 2100-01-01); "
                           "default: the time of arrival"})]

        class ScoreRequest(BaseModel):
            model_config = ConfigDict(extra="forbid")
            user_id: raw_id
            scenario: raw_id = Field(description="one of the serving model's scenarios")
            candidates: Annotated[list[raw_id], Field(min_length=1, max_length=settings.max_candidates)]
            features: Annotated[dict[text, feature_value], Field(max_length=settings.max_features)] = {}

        class Event(BaseModel):
            model_config = ConfigDict(extra="forbid")
            user_id: raw_id
            item_id: raw_id
            scenario: raw_id
            timestamp: unix_seconds | None = None
            event_id: text | None = Field(None, description="the client's id of this event: a retry with the "
                                          "same id (within SAINET_EVENT_DEDUPE_SECONDS) is stored once")

        class ModelRef(BaseModel):
            name: str
            version: str

        class ScoreResponse(BaseModel):
            scores: list[float] = Field(description="click probabilities, in candidate order")
            model: ModelRef
            history_length: int
            cold_start: bool
            degraded: bool = Field(description="true when the feature store did not answer in time and the "
                                               "user was scored as a cold start")

        class EventsResponse(BaseModel):
            appended: int = Field(description="events stored by this request")
            duplicates: int = Field(0, description="events skipped: their event_id was already stored")

        events = Annotated[list[Event], Field(min_length=1, max_length=settings.max_events)]
        return cls(ScoreRequest, Event, TypeAdapter(events), ScoreResponse, EventsResponse)

    def score(self, raw: bytes, scenarios: Container[str], numeric: Container[str] = ()) -> ScoreInputs:
        """A /score body, parsed and checked against the serving model's scenarios and numeric
        features: a `numeric` feature's value must be a number, every other one's a raw id."""
        body = _validated(lambda: self.score_request.model_validate(parse_body(raw)))
        scenario = str(body.scenario)
        if scenario not in scenarios:
            raise InvalidInput(f"unknown scenario {scenario!r}; valid: {list(scenarios)}", "scenario")
        features: dict[str, str | float] = {}
        for name, value in body.features.items():
            try:
                # (a raw id's length was checked by the validator)
                features[name] = _numeric_feature(value) if name in numeric else str(_raw_id(value, 1 << 30))
            except ValueError as error:
                raise InvalidFields([{"loc": ("body", "features", name), "msg": f"Value error, {error}",
                                      "type": "value_error"}]) from None
        return ScoreInputs(str(body.user_id), scenario, [str(c) for c in body.candidates], features)

    def events(self, raw: bytes) -> list[BaseModel]:
        """One event (an object) or a list of them."""
        body = parse_body(raw)
        if isinstance(body, list):
            return _validated(lambda: self.events_adapter.validate_python(body))
        return [_validated(lambda: self.event.model_validate(body))]

    def document(self, document: dict) -> None:
        """Writes the request bodies of /score and /events into an OpenAPI document."""
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        ref = "#/components/schemas/{model}"
        score_schema = self.score_request.model_json_schema(ref_template=ref)
        schemas.update(score_schema.pop("$defs", {}))
        schemas["ScoreRequest"] = score_schema
        events_schema = self.events_adapter.json_schema(ref_template=ref)
        schemas.update(events_schema.pop("$defs", {}))
        schemas["EventsRequest"] = {"title": "EventsRequest", "description": "one event or a list of events",
                                    "anyOf": [{"$ref": "#/components/schemas/Event"}, events_schema]}
        for path, name in (("/score", "ScoreRequest"), ("/events", "EventsRequest")):
            document["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}

    @staticmethod
    def with_scenarios(document: dict, scenarios: list[str] | None, numeric: Container[str] = ()) -> dict:
        """A copy whose ScoreRequest.scenario lists the serving model's scenarios (as strings and,
        for integer-looking ones, as the integers that mean the same) and whose features document
        the model's `numeric` ones as numbers."""
        if not scenarios:
            return document
        document = copy.deepcopy(document)
        if numeric:
            features = document["components"]["schemas"]["ScoreRequest"]["properties"]["features"]
            features["properties"] = {name: {
                "type": "number", "minimum": -MAX_FEATURE_NUMBER, "maximum": MAX_FEATURE_NUMBER,
                "description": "a numeric feature of the serving model (absent: imputed, as in training)"}
                for name in sorted(numeric)}
        allowed: list[str | int] = list(scenarios)
        allowed += [int(s) for s in scenarios if s.isascii() and s.lstrip("-").isdigit() and str(int(s)) == s]
        scenario = document["components"]["schemas"]["ScoreRequest"]["properties"]["scenario"]
        document["components"]["schemas"]["ScoreRequest"]["properties"]["scenario"] = {
            "description": scenario.get("description", ""), "enum": allowed}
        return document


def _validated(validate: Callable[[], Any]) -> Any:
    try:
        return validate()
    except ValidationError as error:
        raise InvalidFields([{"loc": ("body", *e["loc"]), "msg": e["msg"], "type": e["type"]}
                             for e in error.errors(include_url=False, include_input=False)]) from None
