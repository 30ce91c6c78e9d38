"""Tensors to and from the wire (PROTOCOL.md §3), and strict JSON both ways.

Nested and flat `data` go to NumPy whole: one object array, one pass over the
set of leaf types, one cast. Python looks at single elements only on the
error path (to name the bad one) or when the three non-finite strings occur.
Base64 is decoded straight into a NumPy view; responses are written by
orjson from the arrays themselves.
"""

from __future__ import annotations

import binascii
import math
import re

import numpy as np
import orjson
import pybase64  # SIMD base64: 20x the standard library's on a 16 MB tensor

from autograd.shapes import extent

from .errors import ApiError, pointer
from .schemas import MAX_RANK, TensorIn

NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
LITTLE = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
NAMES = {np.dtype(name): name for name in LITTLE}  # dtype.name is slow Python code in NumPy
_NUMBERS = {float, int}
_DUMP = orjson.OPT_SERIALIZE_NUMPY


NONFINITE_HINT = 'non-finite numbers are the strings "NaN", "Infinity" and "-Infinity"'
# Where a parser stopped at a bare NaN or Infinity (Python's json.dumps writes them; sign apart).
_BARE_NONFINITE = re.compile(r"(nan|inf(inity)?)\b", re.IGNORECASE)


def loads(body: bytes):
    """Strict JSON: bare NaN/Infinity, trailing commas and nesting past 1024 are 400s."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        hint = f"; {NONFINITE_HINT}" if _BARE_NONFINITE.match(e.doc, e.pos) else ""
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}{hint}") from None


def dumps(obj) -> bytes:
    return orjson.dumps(obj, option=_DUMP)


def _bad(where: tuple, detail: str) -> ApiError:
    return ApiError(422, "bad_tensor", f"{pointer(where)}: {detail}",
                    [{"pointer": pointer(where), "detail": detail}])


def _too_large(where: tuple, n: int, limit: int) -> ApiError:
    detail = f"{n:,} elements; the limit is {limit:,} per tensor"
    return ApiError(413, "tensor_too_large", f"{pointer(where)}: {detail}",
                    [{"pointer": pointer(where), "detail": detail}])


# ---- decoding ---------------------------------------------------------------------------

def check_size(shape, where: tuple, max_elements: int) -> None:
    """413 tensor_too_large for a tensor's declared shape past the element limit."""
    if extent(shape) > max_elements:
        raise _too_large(where + ("shape",), extent(shape), max_elements)


def decode(t: TensorIn, dtype: np.dtype, where: tuple, max_elements: int) -> np.ndarray:
    """One request tensor as an array of `dtype`; sizes checked before allocating."""
    if t.shape is not None:
        check_size(t.shape, where, max_elements)
    # 1e39 in float32 is Infinity, as in NumPy: reported in the response's warnings, not the log
    with np.errstate(over="ignore"):
        if t.b64 is not None:
            a = _from_b64(t.b64, t.shape, t.dtype, where)
        else:
            a = _from_data(t.data, t.shape, t.encoding, dtype, where + ("data",), max_elements)
        return a.astype(dtype, copy=False)


def _from_b64(text: str, shape, dtype: str, where: tuple) -> np.ndarray:
    le = LITTLE[dtype]
    need = math.prod(shape) * le.itemsize
    if len(text) != 4 * math.ceil(need / 3):
        raise _bad(where + ("b64",), f"{len(text)} base64 characters cannot hold the {need} "
                   f"bytes of shape {list(shape)} in {dtype}")
    try:
        raw = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(where + ("b64",), "not valid standard base64") from None
    if len(raw) != need:
        raise _bad(where + ("b64",), f"{len(raw)} bytes; shape {list(shape)} in {dtype} "
                   f"needs {need}")
    return np.frombuffer(raw, le).reshape(shape)


def _from_data(data, shape, layout, dtype, where: tuple, max_elements: int) -> np.ndarray:
    if not isinstance(data, list):
        if type(data) in _NUMBERS:
            value = data
        elif isinstance(data, str) and data in NONFINITE:
            value = NONFINITE[data]
        else:
            raise _bad(where, "must be a number, one of \"NaN\", \"Infinity\", \"-Infinity\","
                       " or a list of them")
        return _shaped(np.array(value, dtype), shape, layout, where)
    o = np.array(data, dtype=object)
    if o.size > max_elements:
        raise _too_large(where, o.size, max_elements)
    flat = o.ravel().tolist()
    types = set(map(type, flat))
    if not types <= _NUMBERS:
        _check_leaves(o, flat, types, where)
    if o.ndim > MAX_RANK:
        raise _bad(where, f"nested {o.ndim} deep; the most is {MAX_RANK}")
    return _shaped(o.astype(dtype), shape, layout, where)


_LEAF_KINDS = {bool: "a boolean", type(None): "null", dict: "an object",
               str: 'a string other than "NaN", "Infinity", "-Infinity"'}


def _check_leaves(o: np.ndarray, flat: list, types: set, where: tuple) -> None:
    """Name the first leaf that is not a number or an allowed string, or the ragged row."""
    for k, v in enumerate(flat):
        if type(v) in _NUMBERS:
            continue
        if isinstance(v, str) and v in NONFINITE:
            continue
        at = where + tuple(int(i) for i in np.unravel_index(k, o.shape)) if o.ndim else where
        if isinstance(v, list):
            raise _bad(at, "ragged: the nested lists are not all the same length"
                       + (f" (or nested past {o.ndim} levels)" if o.ndim >= 64 else ""))
        what = _LEAF_KINDS.get(type(v), "not a number")
        # JavaScript's JSON.stringify writes NaN and Infinity as null
        hint = f" ({NONFINITE_HINT})" if v is None else ""
        raise _bad(at, f"{what}; tensor data holds numbers only{hint}")


def _shaped(a: np.ndarray, shape, layout, where: tuple) -> np.ndarray:
    """Match data to a declared shape: flat (C order) or nested of exactly that shape."""
    if shape is None:
        return a
    shape = tuple(shape)
    if a.shape == shape and layout != "flat":
        return a
    if a.size == 0 and a.shape == shape[:a.ndim] and layout != "flat":
        return a.reshape(shape)  # nested JSON stops at the first 0: (1, 0, 0) is [[]]
    if a.ndim == 1 and layout != "nested":
        if a.size != math.prod(shape):
            raise _bad(where, f"{a.size} numbers, but shape {list(shape)} needs "
                       f"{math.prod(shape)}")
        return a.reshape(shape)
    raise _bad(where, f"data of shape {list(a.shape)} does not fit shape {list(shape)} "
               f"(flat data is one list in C order)")


# ---- encoding ---------------------------------------------------------------------------

def encode(a: np.ndarray, encoding: str) -> dict:
    """A response tensor: shape, dtype, and data (nested or flat) or b64."""
    a = np.asarray(a)
    name = NAMES.get(a.dtype) or NAMES[a.dtype.newbyteorder("<")]  # a big-endian array too
    out = {"shape": list(a.shape), "dtype": name}
    if encoding == "base64":
        # a JSON string written as it is: no str of the bytes made only to be encoded again
        b64 = pybase64.b64encode(np.ascontiguousarray(a, LITTLE[name]))
        out["b64"] = orjson.Fragment(b"".join((b'"', b64, b'"')))  # one copy, not two
        return out
    if encoding == "flat":
        out["encoding"] = "flat"
        a = a.reshape(-1)
    out["data"] = _values(a)
    return out


def _values(a: np.ndarray):
    """What orjson writes: the array itself, or, with non-finite values, lists with strings."""
    if a.size and not np.isfinite(a).all():
        obj = np.array(list(a.reshape(-1)), dtype=object).reshape(a.shape)
        obj[np.isnan(a)] = "NaN"
        obj[np.isposinf(a)] = "Infinity"
        obj[np.isneginf(a)] = "-Infinity"
        return obj.tolist() if a.ndim else obj[()]
    if a.ndim == 0:
        return a[()]  # a NumPy scalar: orjson keeps float32's shortest repr
    return np.ascontiguousarray(a)
