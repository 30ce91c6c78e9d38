"""Tensors to and from the wire in the SDK: every encoding, both dtypes, the awkward shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client.codec import BINARY_OVER, decode, dumps, encode, encoding_for

ARRAYS = {
    "scalar": np.array(0.1),
    "vector": np.array([1.5, -2.0, 3.25]),
    "matrix": np.arange(12.0).reshape(3, 4) / 7,
    "empty": np.zeros((0, 3)),
    "nonfinite": np.array([[np.nan, np.inf], [-np.inf, 1.0]]),
    "rank4": np.ones((2, 1, 3, 1)),
}


@pytest.mark.parametrize("encoding", ["nested", "flat", "base64"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_encode_then_decode_is_exact(name, dtype, encoding):
    a = ARRAYS[name].astype(dtype)
    wire = json.loads(dumps(encode(a, dtype, encoding)))  # through strict JSON text
    assert wire["shape"] == list(a.shape) and wire["dtype"] == dtype
    back = decode(wire)
    assert back.dtype == dtype and back.shape == a.shape
    np.testing.assert_array_equal(back, a)


def test_nonfinite_values_are_the_three_strings():
    wire = encode(ARRAYS["nonfinite"], "float64", "nested")
    assert wire["data"] == [["NaN", "Infinity"], ["-Infinity", 1.0]]
    with pytest.raises(ValueError):
        dumps({"bare": float("nan")})


def test_the_size_picks_the_encoding():
    assert "data" in encode(np.ones(BINARY_OVER), "float32")
    assert "b64" in encode(np.ones(BINARY_OVER + 1), "float32")
    assert encoding_for([3, BINARY_OVER]) == "nested"
    assert encoding_for([3, BINARY_OVER + 1]) == "base64"


def test_a_request_tensor_without_shape_or_dtype_decodes_in_the_given_dtype():
    a = decode({"data": [[1, 2], [3, "NaN"]]}, "float64")
    assert a.dtype == np.float64 and a.shape == (2, 2) and np.isnan(a[1, 1])
