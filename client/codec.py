"""Tensors to and from the wire (PROTOCOL.md §3), and strict JSON.

Small tensors travel as nested JSON numbers, which a person can read in a
log; past `BINARY_OVER` elements they travel as base64 of the little-endian
bytes, which is exact and several times smaller and faster. Non-finite
values are the strings "NaN", "Infinity", "-Infinity", never bare tokens.
"""

from __future__ import annotations

try:  # SIMD base64 when installed (the server has it); the standard library's otherwise
    import pybase64 as base64
except ImportError:  # pragma: no cover - depends on the environment
    import base64
import json
import math

import numpy as np

BINARY_OVER = 1024  # elements; larger tensors go as base64, both ways
LITTLE = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def dumps(obj) -> bytes:
    """Strict JSON: a bare NaN anywhere is a bug here, not a body to send."""
    return json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()


def encoding_for(sizes) -> str:
    """The response encoding to ask for, given the sizes of the tensors coming back."""
    return "base64" if any(n > BINARY_OVER for n in sizes) else "nested"


def encode(a: np.ndarray, dtype: str, encoding: str | None = None) -> dict:
    """One tensor as the wire writes it, in `dtype`: nested `data`, flat `data` or `b64`.

    `encoding` None picks by size: nested up to BINARY_OVER elements, base64 above.
    """
    a = np.asarray(a, LITTLE[dtype])
    if encoding is None:
        encoding = encoding_for([a.size])
    out = {"shape": list(a.shape), "dtype": dtype}
    if encoding == "base64":
        out["b64"] = base64.b64encode(np.ascontiguousarray(a)).decode()
        return out
    if encoding == "flat":
        out["encoding"] = "flat"
        a = a.reshape(-1)
    out["data"] = _values(a)
    return out


def _values(a: np.ndarray):
    """Python numbers (exact for float32 too), with the three strings where not finite."""
    if a.size and not np.isfinite(a).all():
        obj = a.astype(object)
        obj[np.isnan(a)] = "NaN"
        obj[np.isposinf(a)] = "Infinity"
        obj[np.isneginf(a)] = "-Infinity"
        return obj.tolist()
    return a.astype(np.float64).tolist()


def decode(t: dict, dtype: str | None = None) -> np.ndarray:
    """A wire tensor (request or response form) as an array of its own or the given dtype."""
    dtype = t.get("dtype") or dtype or "float32"
    if "b64" in t:
        raw = base64.b64decode(t["b64"], validate=True)
        return np.frombuffer(raw, LITTLE[dtype]).reshape(t["shape"]).astype(dtype)
    # NumPy parses "NaN", "Infinity" and "-Infinity" itself when casting to float.
    a = np.array(t["data"], dtype=dtype)
    if "shape" in t and a.shape != tuple(t["shape"]):
        a = a.reshape(t["shape"])
    return a


