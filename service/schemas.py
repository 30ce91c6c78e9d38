"""The wire format (PROTOCOL.md), request and response models side by side.

Requests are validated strictly (`extra="forbid"`, no "1.5" -> 1.5, no
true -> 1.0). Tensor `data` is not validated element by element here: the
codec hands it to NumPy and checks the result. Op names and attributes are
checked by the engine's registry, so `/v1/ops` and validation never disagree.
The OpenAPI document is generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SkipValidation,
    StringConstraints,
    ValidationInfo,
    model_validator,
)
from typing_extensions import TypeAliasType, TypedDict

from autograd import OPS
from autograd.graph import ID, MAX_RANK  # one limit of rank for requests and the engine

# One limit for how deep arrays nest anywhere in a request: tensor data (its rank), node args
# and attrs. JSON parsing allows 1,024 levels; orjson writes (the plan cache's key) 254.
MAX_DEPTH = MAX_RANK


def _shallow(value):
    """Refuse arrays or objects nested deeper than MAX_DEPTH inside a node's member."""
    level, todo = 0, [value]
    while todo := [item for item in todo if isinstance(item, list | dict)]:
        level += 1  # the containers in `todo` are this many levels deep
        if level > MAX_DEPTH:
            raise ValueError(f"arrays or objects nested deeper than {MAX_DEPTH} levels")
        todo = [v for item in todo for v in (item.values() if isinstance(item, dict) else item)]
    return value


Shallow = AfterValidator(_shallow)
MAX_ARGS = 1024  # of one node: pydantic stops at the first past it, before allocating more

Id = Annotated[str, StringConstraints(pattern=f"^{ID.pattern}$")]
Dtype = Literal["float32", "float64"]
Encoding = Literal["nested", "flat", "base64"]
Shape = Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_RANK)]
Number = float | Literal["NaN", "Infinity", "-Infinity"]
NestedData = TypeAliasType("NestedData", Number | list["NestedData"])


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# ---- requests ---------------------------------------------------------------------------

def _given(absent: tuple[str, ...] = (), **types) -> dict:
    """JSON Schema for "these members are present and not null, each of its type; those absent
    or null" (a null member is absent). Types, not `not`: schemathesis negates them."""
    properties = {n: {"type": t} for n, t in types.items()} | {n: {"type": "null"}
                                                                for n in absent}
    return {"required": list(types), "properties": properties}


class TensorIn(Strict):
    """Nested `{data}`, flat `{shape, data}` or binary `{shape, dtype, b64}` (PROTOCOL.md §3).
    Numbers are JSON numbers or the strings "NaN", "Infinity", "-Infinity"."""

    # The forms as constraints that validators check and code generators pass over (a `oneOf`
    # of them made openapi-generator find several matches, openapi-python-client none), each
    # simple enough for schemathesis to negate: without b64, data; with b64, shape and dtype
    # but no data; flat data with a shape.
    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"b64": {"type": "null"}}},
        "then": _given(data=["number", "string", "array"]),
        "dependentSchemas": {
            "b64": {"anyOf": [{"properties": {"b64": {"type": "null"}}},
                              _given(shape="array", dtype="string", absent=("data",))]},
            "encoding": {"anyOf": [{"properties": {"encoding": {"enum": ["nested", None]}}},
                                   _given(shape="array")]},
        },
    })

    data: SkipValidation[NestedData] | None = Field(
        None, description="numbers, nested (shape inferred) or flat in C order with `shape`")
    shape: Shape | None = Field(None, description="the tensor's shape; required with `b64`")
    dtype: Dtype | None = Field(None, description="the dtype of `b64`'s bytes")
    b64: str | None = Field(None, description="base64 of the little-endian C-order bytes")
    encoding: Literal["nested", "flat"] | None = Field(
        None, description="how `data` is laid out; inferred when omitted (responses carry it)")

    @model_validator(mode="after")
    def _one_form(self, info: ValidationInfo):
        if self.b64 is not None:
            if self.data is not None:
                raise ValueError("give either `data` or `b64`, not both")
            if self.shape is None or self.dtype is None:
                raise ValueError("a base64 tensor needs `shape` and `dtype`")
        elif self.data is None:
            if info.context and info.context.get("shapes") and self.shape is not None:
                return self  # POST /v1/shapes: a tensor may be its shape alone
            raise ValueError("a tensor needs `data` (or `shape`, `dtype` and `b64`)")
        if self.encoding == "flat" and self.shape is None:
            raise ValueError("flat data needs `shape`")
        return self


class InputTensor(TensorIn):
    requires_grad: bool = Field(False, description="a trainable parameter; in grad.wrt by default")


class Node(TypedDict):
    """One operation. A TypedDict, not a model: validated as fast as a dict (a graph may have
    100,000 nodes), and handed to the engine as it is."""

    __pydantic_config__ = ConfigDict(strict=True, extra="forbid")  # type: ignore[misc]

    id: Id
    op: Annotated[str, Field(json_schema_extra={"enum": sorted(OPS)},
                             description="a name from /v1/ops")]
    args: Annotated[list[Any], Shallow, Field(
        max_length=MAX_ARGS,
        json_schema_extra={"items": {"anyOf": [{"type": "string", "pattern": f"^{ID.pattern}$"},
                                               {"type": "number"}]}},
        description="ids of inputs or nodes, or number literals where the op allows")]
    attrs: NotRequired[Annotated[dict[str, Any], Shallow,
                                 Field(description="the op's attributes")]]


class GradSpec(Strict):
    of: Id = Field(description="the id to differentiate")
    seed: TensorIn | None = Field(None, description="incoming gradient, of `of`'s shape; "
                                  "required unless `of` has one element; with `batch`, "
                                  "k of them: shape (k, *shape(of))")
    wrt: list[Id] | None = Field(None, description="ids whose gradients are returned; "
                                 "default: every input with requires_grad")
    batch: bool = Field(False, description="`seed` holds k cotangents along a leading axis; "
                        "each gradient comes back as (k, *shape(wrt id))")


class JvpSpec(Strict):
    """Forward mode (PROTOCOL.md §8): directional derivatives of `of` along the tangents."""

    tangents: dict[Id, TensorIn] = Field(
        description="input id -> tangent of its shape (with `batch`: (k, *shape)); inputs not "
        "named have none", json_schema_extra={"additionalProperties": False})
    of: list[Id] | None = Field(None, description="ids whose JVPs are returned; default: "
                                "`outputs`")
    batch: bool = Field(False, description="every tangent has a leading axis of the same k")


class HvpSpec(Strict):
    """Hessian-vector products: Σ_j ∂²(seed·of)/∂i∂j · tangent_j for each i in `wrt`."""

    of: Id = Field(description="the id whose second derivatives are taken")
    seed: TensorIn | None = Field(None, description="of `of`'s shape; required unless `of` "
                                  "has one element")
    wrt: list[Id] | None = Field(None, description="input ids i; default: every input with "
                                 "requires_grad")
    tangents: dict[Id, TensorIn] = Field(
        description="input id j -> vector of its shape (with `batch`: (k, *shape))",
        json_schema_extra={"additionalProperties": False})
    batch: bool = Field(False, description="every tangent has a leading axis of the same k")


class JacobianSpec(Strict):
    of: list[Id] = Field(description="ids y whose Jacobians are returned")
    wrt: list[Id] | None = Field(None, description="input ids x; default: every input with "
                                 "requires_grad. Each Jacobian has shape (*shape(y), *shape(x))")


class VmapSpec(Strict):
    inputs: list[Id] = Field(min_length=1, description="input ids that carry a leading batch "
                             "axis of the same size B; the graph runs for each of the B slices "
                             "and everything returned gets the leading axis B")


class EvaluateRequest(Strict):
    # The example /docs fills in for "Try it out": PROTOCOL.md §1 as one expression.
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inputs": {"x": {"data": [[1, 2], [3, 4]]},
                   "w": {"data": [[0.5], [-0.25]], "requires_grad": True},
                   "b": {"data": [1.0], "requires_grad": True}},
        "expr": {"loss": "mean(sigmoid(x @ w + b))"},
        "grad": {"of": "loss"}}]})

    inputs: dict[Id, InputTensor] = Field(description="named leaf tensors")
    nodes: list[Node] = Field(default_factory=list, description="operations, in any order")
    expr: Annotated[dict[Id, str], Field(json_schema_extra={"additionalProperties": False})] \
        | None = Field(None, description=(
            "nodes defined by expressions, {id: expression}, beside or instead of `nodes`: "
            "`mean(sigmoid(x @ w + b))` (PROTOCOL.md §12); each sub-expression becomes a "
            "node named KEY:N"))
    outputs: list[Id] | None = Field(None, description="ids whose values are returned; "
                                     "default: every node no other node uses")
    grad: GradSpec | None = None
    jvp: JvpSpec | None = None
    hvp: HvpSpec | None = None
    jacobian: JacobianSpec | None = None
    vmap: VmapSpec | None = None
    dtype: Dtype = Field("float32", description="every tensor is computed in it")
    encoding: Encoding = Field("nested", description="how response tensors are written")
    anomaly: bool = Field(False, description="report the first node with a NaN or ±Infinity")


class ShapesRequest(EvaluateRequest):
    """The body of /v1/evaluate, where any tensor may be `{"shape": [...]}` alone."""


# ---- responses --------------------------------------------------------------------------

class TensorOut(BaseModel):
    shape: list[int]
    dtype: Dtype
    data: NestedData | None = Field(None, description="with encoding nested or flat")
    encoding: Literal["flat"] | None = Field(None, description="present when data is flat")
    b64: str | None = Field(None, description="with encoding base64")


class NumericWarning(BaseModel):
    """A non-finite value (`nan`, `inf`), or a request that asks for something it cannot
    get (`nothing_to_differentiate`: `grad` with an empty `wrt`; its `detail` says why)."""

    id: str
    kind: Literal["nan", "inf", "nothing_to_differentiate"]
    detail: str | None = Field(None, description="what went wrong, for a kind that is not "
                               "a count of values")
    count: int | None = Field(None, description="how many values, for a returned tensor")
    in_: Literal["outputs", "gradients", "jvp", "hvp", "jacobians"] | None = Field(
        None, alias="in")
    op: str | None = Field(None, description="with anomaly: the op of the first bad node")
    phase: Literal["forward", "backward"] | None = None


class Stats(BaseModel):
    nodes: int
    forward_ms: float
    backward_ms: float


class EvaluateResponse(BaseModel):
    outputs: dict[str, TensorOut]
    gradients: dict[str, TensorOut]
    jvp: dict[str, TensorOut] | None = Field(None, description="when `jvp` was asked")
    hvp: dict[str, TensorOut] | None = Field(None, description="when `hvp` was asked")
    jacobians: dict[str, dict[str, TensorOut]] | None = Field(
        None, description="when `jacobian` was asked: of id -> wrt id -> tensor")
    warnings: list[NumericWarning]
    stats: Stats
    expanded: list[Node] | None = Field(None, description="with `expr`: the nodes it "
                                        "expanded to, generated ids included")


class ShapeOut(BaseModel):
    shape: list[int]
    dtype: Dtype


class NodeShape(ShapeOut):
    op: str


class Cost(BaseModel):
    flops: float = Field(description="estimated floating-point operations")
    peak_bytes: int = Field(description="tensor bytes alive at once, at the peak")
    response_bytes: int = Field(description="the response's size, at most")


class ShapesResponse(BaseModel):
    nodes: dict[str, NodeShape]
    outputs: dict[str, ShapeOut]
    gradients: dict[str, ShapeOut]
    jvp: dict[str, ShapeOut]
    hvp: dict[str, ShapeOut]
    jacobians: dict[str, dict[str, ShapeOut]]
    cost: Cost
    expanded: list[Node] | None = Field(None, description="with `expr`: the nodes it "
                                        "expanded to, generated ids included")


class ProblemPointer(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON Pointer into the request body")
    detail: str
    column: int | None = Field(None, description="in an `expr`: where, 1-based, in characters")


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable `code`."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str
    errors: list[ProblemPointer] | None = None


class Info(BaseModel):
    name: Literal["gradserve"]
    version: str
    dtypes: list[str]
    encodings: list[str]
    limits: dict[str, float]


class OpInfo(BaseModel):
    name: str
    arity: int = Field(description="the number of args; with variadic, the least number")
    variadic: bool = Field(description="true when the op takes `arity` args or more")
    numbers: list[int] = Field(description="arg positions that may be number literals")
    attrs: dict[str, dict[str, Any]] = Field(description="JSON Schema of each attribute")
    required_attrs: list[str]
    forward: str
    gradient: str
    operator: str | None
    dtypes: list[str]


class OpsList(BaseModel):
    ops: list[OpInfo]


class Status(BaseModel):
    status: str
