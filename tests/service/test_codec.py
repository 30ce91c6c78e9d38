"""service/codec.py: every tensor form of PROTOCOL.md §3, in and out, and strict JSON."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from autograd.cost import encoded_size
from service import codec
from service.errors import ApiError
from service.schemas import TensorIn

F32, F64 = np.dtype("float32"), np.dtype("float64")
LIMIT = 1000  # max_elements for these tests
ENCODINGS = ("nested", "flat", "base64")


def strict_loads(text):
    """json.loads that refuses bare NaN/Infinity, as every strict client does."""
    def refuse(token):
        raise ValueError(f"bare {token} in a response")
    return json.loads(text, parse_constant=refuse)


def b64(values, dtype: str, shape=None) -> dict:
    """A binary request tensor: little-endian C-order bytes, written independently of codec."""
    a = np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"shape": list(a.shape if shape is None else shape), "dtype": dtype,
            "b64": base64.b64encode(a.tobytes()).decode()}


def decode(body: dict, dtype=F32, limit=LIMIT) -> np.ndarray:
    return codec.decode(TensorIn.model_validate(body), dtype, ("inputs", "x"), limit)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape, dtype and values, NaN equal to NaN (of either sign), 0.0 not -0.0."""
    signed = ~np.isnan(a)
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a[signed]), np.signbit(b[signed])))


def nest(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


# ---- decoding: every request form -------------------------------------------------------

NAN, INF = math.nan, math.inf
THIRD64 = 1 / 3  # not a float32: survives only a float64 path

DECODE = [
    # name, body, computation dtype, expected
    ("nested 2-D", {"data": [[1, 2], [3, 4]]}, F32, [[1, 2], [3, 4]]),
    ("nested ints and floats", {"data": [1, 2.5, -3]}, F32, [1, 2.5, -3]),
    ("0-d bare number", {"data": 2.5}, F32, 2.5),
    ("0-d bare int", {"data": -7}, F32, -7.0),
    ("empty 1-D", {"data": []}, F32, np.zeros((0,))),
    ("empty inner dims", {"data": [[], []]}, F32, np.zeros((2, 0))),
    ("nested 3-D", {"data": [[[1], [2]], [[3], [4]]]}, F32, [[[1], [2]], [[3], [4]]]),
    ("flat", {"shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}, F32, [[1, 2, 3], [4, 5, 6]]),
    ("flat 0-d", {"shape": [], "data": [7]}, F32, 7.0),
    ("flat with a zero dim", {"shape": [0, 3], "data": []}, F32, np.zeros((0, 3))),
    ("flat, encoding member", {"shape": [2, 2], "data": [1, 2, 3, 4], "encoding": "flat"},
     F32, [[1, 2], [3, 4]]),
    ("nested with matching shape", {"shape": [2, 2], "data": [[1, 2], [3, 4]]},
     F32, [[1, 2], [3, 4]]),
    ("nested, encoding member", {"shape": [2, 1], "data": [[1], [2]], "encoding": "nested"},
     F32, [[1], [2]]),
    ("nested 0-d with shape []", {"shape": [], "data": 3}, F32, 3.0),
    ("base64 float32 (§1's b)", {"shape": [1], "dtype": "float32", "b64": "AACAPw=="},
     F32, [1.0]),
    ("base64 float32 2-D", b64([[1.5, -2], [0.25, 8]], "float32"), F32,
     [[1.5, -2], [0.25, 8]]),
    ("base64 float64 into float64", b64([THIRD64, -1e300], "float64"), F64, [THIRD64, -1e300]),
    ("base64 float64 into float32", b64([THIRD64], "float64"), F32, [np.float32(THIRD64)]),
    ("base64 0-d", b64(2.0, "float32"), F32, 2.0),
    ("base64 empty", {"shape": [0, 2], "dtype": "float64", "b64": ""}, F32, np.zeros((0, 2))),
    ("base64 non-finite", b64([NAN, INF, -INF], "float32"), F32, [NAN, INF, -INF]),
    ("nested float64 kept", {"data": [THIRD64, 0.1]}, F64, [THIRD64, 0.1]),
    ("non-finite strings", {"data": ["NaN", "Infinity", "-Infinity", 1]}, F32,
     [NAN, INF, -INF, 1]),
    ("non-finite strings nested", {"data": [["NaN", 0], [1, "-Infinity"]]}, F64,
     [[NAN, 0], [1, -INF]]),
    ("bare \"NaN\"", {"data": "NaN"}, F32, NAN),
    ("bare \"-Infinity\"", {"data": "-Infinity"}, F64, -INF),
    ("flat non-finite", {"shape": [1, 2], "data": ["Infinity", 2]}, F32, [[INF, 2]]),
    ("negative zero", {"data": [-0.0, 0.0]}, F32, [-0.0, 0.0]),
]


@pytest.mark.parametrize(("body", "dtype", "expected"), [r[1:] for r in DECODE],
                         ids=[r[0] for r in DECODE])
def test_decode(body, dtype, expected):
    got = decode(body, dtype)
    assert same(got, np.asarray(expected, dtype)), got


BAD = [
    # name, body, status, code, pointer
    ("ragged", {"data": [[1, 2], [3]]}, 422, "bad_tensor", "/inputs/x/data/0"),
    ("ragged deeper", {"data": [[1, [2]], [3, 4]]}, 422, "bad_tensor", "/inputs/x/data/0/1"),
    ("number beside a list", {"data": [1, []]}, 422, "bad_tensor", "/inputs/x/data/1"),
    ("bool", {"data": [1, True]}, 422, "bad_tensor", "/inputs/x/data/1"),
    ("bare bool", {"data": False}, 422, "bad_tensor", "/inputs/x/data"),
    ("null", {"data": [[1, None]]}, 422, "bad_tensor", "/inputs/x/data/0/1"),
    ("other string", {"data": [1, "nan"]}, 422, "bad_tensor", "/inputs/x/data/1"),
    ("numeric string", {"data": ["1.5"]}, 422, "bad_tensor", "/inputs/x/data/0"),
    ("bare other string", {"data": "inf"}, 422, "bad_tensor", "/inputs/x/data"),
    ("object", {"data": [[1, 2], [{"a": 1}, 4]]}, 422, "bad_tensor", "/inputs/x/data/1/0"),
    ("flat too short", {"shape": [2, 2], "data": [1, 2, 3]}, 422, "bad_tensor",
     "/inputs/x/data"),
    ("flat too long", {"shape": [3], "data": [1, 2, 3, 4]}, 422, "bad_tensor", "/inputs/x/data"),
    ("nested of another shape", {"shape": [3, 2], "data": [[1, 2], [3, 4]]}, 422, "bad_tensor",
     "/inputs/x/data"),
    ("encoding flat, nested data", {"shape": [2, 2], "data": [[1, 2], [3, 4]],
                                    "encoding": "flat"}, 422, "bad_tensor", "/inputs/x/data"),
    ("encoding nested, flat data", {"shape": [2, 2], "data": [1, 2, 3, 4],
                                    "encoding": "nested"}, 422, "bad_tensor", "/inputs/x/data"),
    ("bare number, shape [2]", {"shape": [2], "data": 1}, 422, "bad_tensor", "/inputs/x/data"),
    ("nested past rank 32", {"data": nest(1.0, 33)}, 422, "bad_tensor", "/inputs/x/data"),
    ("nested past NumPy's rank", {"data": nest(1.0, 70)}, 422, "bad_tensor", None),
    ("base64 too short", b64([1.0], "float32", shape=[2]), 422, "bad_tensor", "/inputs/x/b64"),
    ("base64 float32 bytes as float64", {"shape": [1], "dtype": "float64", "b64": "AACAPw=="},
     422, "bad_tensor", "/inputs/x/b64"),
    ("base64 right length, extra byte", {"shape": [1], "dtype": "float32", "b64": "AAAAAAA="},
     422, "bad_tensor", "/inputs/x/b64"),
    ("base64 bad alphabet", {"shape": [1], "dtype": "float32", "b64": "AA-_Pw=="},
     422, "bad_tensor", "/inputs/x/b64"),
    ("base64 with a newline", {"shape": [3], "dtype": "float32", "b64": "AAAAAAAA\nAAAAAAA="},
     422, "bad_tensor", "/inputs/x/b64"),
    ("shape over max_elements", {"shape": [LIMIT + 1], "data": [0]}, 413, "tensor_too_large",
     "/inputs/x/shape"),
    ("base64 shape over max_elements", {"shape": [10**6, 10**6], "dtype": "float32", "b64": ""},
     413, "tensor_too_large", "/inputs/x/shape"),
    ("nested over max_elements", {"data": [0] * (LIMIT + 1)}, 413, "tensor_too_large",
     "/inputs/x/data"),
]


@pytest.mark.parametrize(("body", "status", "code", "where"), [r[1:] for r in BAD],
                         ids=[r[0] for r in BAD])
def test_decode_refuses(body, status, code, where):
    with pytest.raises(ApiError) as e:
        decode(body)
    err = e.value
    assert (err.status, err.code) == (status, code), err.detail
    if where is not None:
        assert [p["pointer"] for p in err.errors] == [where]
    else:
        assert err.errors[0]["pointer"].startswith("/inputs/x/data")


def test_base64_is_little_endian():
    """The same bytes read as big-endian would be a different number: the codec must not."""
    body = {"shape": [1], "dtype": "float32", "b64": base64.b64encode(b"\x00\x00\x80\x3f").decode()}
    assert decode(body)[0] == 1.0
    body64 = {"shape": [1], "dtype": "float64", "b64": base64.b64encode(
        b"\x00\x00\x00\x00\x00\x00\xf0\x3f").decode()}
    assert decode(body64, F64)[0] == 1.0


# ---- encoding: every response form ------------------------------------------------------

def le(values, fmt: str) -> str:
    """Base64 of little-endian bytes, through struct rather than NumPy."""
    import struct
    return base64.b64encode(struct.pack(f"<{len(values)}{fmt}", *values)).decode()


ENCODE = [
    # name, array, encoding, the JSON object expected
    ("nested 2-D", np.array([[1, 2], [3, 4]], F32), "nested",
     {"shape": [2, 2], "dtype": "float32", "data": [[1.0, 2.0], [3.0, 4.0]]}),
    ("nested 0-d", np.array(2.5, F32), "nested", {"shape": [], "dtype": "float32", "data": 2.5}),
    ("nested empty dims", np.zeros((2, 0), F64), "nested",
     {"shape": [2, 0], "dtype": "float64", "data": [[], []]}),
    ("nested non-finite", np.array([[np.nan, 1], [np.inf, -np.inf]], F32), "nested",
     {"shape": [2, 2], "dtype": "float32", "data": [["NaN", 1.0], ["Infinity", "-Infinity"]]}),
    ("nested 0-d NaN", np.array(np.nan, F64), "nested",
     {"shape": [], "dtype": "float64", "data": "NaN"}),
    ("flat 2-D", np.array([[1, 2], [3, 4]], F32), "flat",
     {"shape": [2, 2], "dtype": "float32", "encoding": "flat", "data": [1.0, 2.0, 3.0, 4.0]}),
    ("flat 0-d", np.array(-3, F64), "flat",
     {"shape": [], "dtype": "float64", "encoding": "flat", "data": [-3.0]}),
    ("flat non-finite", np.array([[np.nan], [np.inf]], F64), "flat",
     {"shape": [2, 1], "dtype": "float64", "encoding": "flat", "data": ["NaN", "Infinity"]}),
    ("flat transposed (C order)", np.array([[1, 2], [3, 4]], F32).T, "flat",
     {"shape": [2, 2], "dtype": "float32", "encoding": "flat", "data": [1.0, 3.0, 2.0, 4.0]}),
    ("base64 float32", np.array([[1, 2], [3, 4]], F32), "base64",
     {"shape": [2, 2], "dtype": "float32", "b64": le([1, 2, 3, 4], "f")}),
    ("base64 float64", np.array([1 / 3, -2], F64), "base64",
     {"shape": [2], "dtype": "float64", "b64": le([1 / 3, -2], "d")}),
    ("base64 transposed (C order)", np.array([[1, 2], [3, 4]], F64).T, "base64",
     {"shape": [2, 2], "dtype": "float64", "b64": le([1, 3, 2, 4], "d")}),
    ("base64 big-endian input", np.array([1.5, 2], ">f4"), "base64",
     {"shape": [2], "dtype": "float32", "b64": le([1.5, 2], "f")}),
    ("base64 empty", np.zeros((0, 3), F32), "base64",
     {"shape": [0, 3], "dtype": "float32", "b64": ""}),
]


@pytest.mark.parametrize(("a", "encoding", "expected"), [r[1:] for r in ENCODE],
                         ids=[r[0] for r in ENCODE])
def test_encode(a, encoding, expected):
    text = codec.dumps(codec.encode(a, encoding))
    assert strict_loads(text) == expected


FULL = [
    # value, dtype, the token the response must hold (shortest round-trip repr)
    (1 / 3, F32, "0.33333334"),
    (1 / 3, F64, "0.3333333333333333"),
    (0.1, F32, "0.1"),
    (16777217, F32, "16777216.0"),
    (3.4028234663852886e38, F32, "3.4028235e+38"),
    (1e-45, F32, "1e-45"),
    (2.2250738585072014e-308, F64, "2.2250738585072014e-308"),
]


@pytest.mark.parametrize(("value", "dtype", "token"), FULL)
@pytest.mark.parametrize("shape", [(), (1,)])
def test_floats_written_in_full(value, dtype, token, shape):
    a = np.full(shape, value, dtype)
    text = codec.dumps(codec.encode(a, "nested")).decode()
    assert token in text
    back = np.asarray(strict_loads(text)["data"], F64).astype(dtype)
    assert back.tobytes() == a.tobytes()


# ---- properties over random tensors -----------------------------------------------------

def shapes():
    """Small shapes up to rank 4, long runs of ones up to rank 32, and huge empty ones."""
    small = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)
    tall = st.lists(st.sampled_from([1, 1, 1, 2]), max_size=32).map(tuple).filter(
        lambda s: math.prod(s) <= 256)
    empty = st.lists(st.integers(0, 10**9), max_size=31).filter(
        lambda s: math.prod(d for d in s if d) < 2**40).map(lambda s: (0, *s))
    return st.one_of(small, tall, empty)


def arrays():
    return st.sampled_from([F32, F64]).flatmap(
        lambda dt: hnp.arrays(dt, shapes(), elements=st.floats(width=dt.itemsize * 8)))


@settings(max_examples=150, deadline=None)
@given(a=arrays(), encoding=st.sampled_from(ENCODINGS))
def test_round_trip_is_exact(a, encoding):
    """encode, write, read strictly, decode: the same array, bit for bit (NaN as NaN)."""
    doc = strict_loads(codec.dumps(codec.encode(a, encoding)))
    assert doc["shape"] == list(a.shape) and doc["dtype"] == a.dtype.name
    back = codec.decode(TensorIn.model_validate(doc), a.dtype, ("x",), 2**40)
    assert same(back, a)


@settings(max_examples=200, deadline=None)
@given(a=arrays(), encoding=st.sampled_from(ENCODINGS))
def test_encoded_size_is_an_upper_bound(a, encoding):
    real = len(codec.dumps(codec.encode(a, encoding)))
    assert real <= encoded_size(a.shape, a.dtype, encoding)


@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encoded_size_bounds_the_longest_numbers(dtype, encoding):
    """The longest shortest-repr of each dtype, negative and with a 3-digit exponent."""
    info = np.finfo(dtype)
    worst = np.full((7, 5), -(info.smallest_normal * (1 + 2 * info.eps)), dtype)
    worst[0, 0] = -info.max
    assert len(codec.dumps(codec.encode(worst, encoding))) <= encoded_size(
        worst.shape, dtype, encoding)


# ---- strict JSON ------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"NaN", b'{"a": NaN}', b'{"a": [Infinity]}', b'{"a": -Infinity}', b'{"a": 1,}', b"[1 2]",
    b"{'a': 1}", b"", b"   ", b"\xff\xfe", b'{"a": 01}', b'{"a": .5}', b"{" * 2000 + b"}" * 2000,
])
def test_loads_refuses_what_is_not_strict_json(body):
    with pytest.raises(ApiError) as e:
        codec.loads(body)
    assert (e.value.status, e.value.code) == (400, "malformed_json")


def test_loads_reads_the_nonfinite_strings_as_strings():
    assert codec.loads(b'{"data": ["NaN", "Infinity", "-Infinity", 1e308]}') == {
        "data": ["NaN", "Infinity", "-Infinity", 1e308]}
