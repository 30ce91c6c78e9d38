"""The Client: one pooled requests.Session, every verb through one `request()`.

    with Client("http://127.0.0.1:8000", api_key=None, timeout=30) as c:
        r = c.evaluate(loss, grad_of=loss)
        r[loss], r.grad(w)

Connection failures and 429/503 answers are retried with exponential backoff
(or after the server's Retry-After); evaluation has no side effects, so a
POST is as safe to repeat as a GET. Nothing else is retried: a 4xx will not
change by asking again, and a read timeout means the work itself is slow.
"""

from __future__ import annotations

import abc
import email.utils
import importlib.metadata
import itertools
import json
import random
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from time import sleep

import requests
from requests.adapters import HTTPAdapter

from . import codec
from .errors import (
    ConnectError,
    GradserveError,
    NetworkError,
    ReadTimeoutError,
    problem,
    raise_problem,
)
from .graph import Graph, Node, listed
from .model import Model
from .result import Result, Shapes

try:
    VERSION = importlib.metadata.version("gradserve")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0+unknown"

RETRY_STATUS = frozenset({429, 503})
PROGRESS_DELAY = 1.0  # seconds evaluate_many runs before it shows a progress bar


class BaseClient(abc.ABC):
    """What every client offers; subclasses say how a request is answered (`request`)."""

    @abc.abstractmethod
    def request(self, method: str, path: str, *, json=None, **kwargs) -> dict:
        """Answer one request: the decoded JSON body, or a GradserveError."""

    def close(self) -> None:
        """Release what the client holds (the local client holds nothing)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- verbs -----------------------------------------------------------------------------

    def info(self) -> dict:
        """GET /v1: name, version, dtypes, encodings and the server's limits."""
        return self.request("GET", "/v1")

    def ops(self) -> list[dict]:
        """GET /v1/ops: every op, its arity, attributes and formulas."""
        return self.request("GET", "/v1/ops")["ops"]

    def models(self) -> list[dict]:
        """GET /v1/models: every model the server holds, its inputs and outputs."""
        return self.request("GET", "/v1/models")["models"]

    def model(self, name: str) -> Model:
        """A model stored with the server, to call with NumPy arrays (client/model.py)."""
        return Model(self, self.request("GET", f"/v1/models/{name}"))

    def evaluate(self, *outputs, grad_of=None, wrt=None, seed=None, batch: bool = False,
                 jvp: dict | None = None, hvp: dict | None = None, jacobian: dict | None = None,
                 vmap: dict | None = None, dtype: str = "float32", encoding: str | None = None,
                 anomaly: bool = False) -> Result:
        """Values of `outputs`, and the derivatives asked for, from one forward pass.

        With `grad_of`, d(grad_of)/d(each of `wrt`): `wrt` defaults to every parameter of
        the graph and may name any node; `seed` is the incoming gradient when `grad_of` is
        not a single element, or with `batch=True` k of them, (k, *shape). `jvp`, `hvp` and
        `jacobian` are PROTOCOL.md §8's members as dicts, e.g. `jvp={"of": [y], "tangents":
        {x: v}}`; Nodes or ids wherever an id goes, arrays wherever a tensor goes. `vmap`
        maps leaves to B input sets each, `{x: X}` with X of shape (B, *x.shape): every
        result comes back with a leading B, row i as for X[i] (per-example gradients).
        """
        return self.evaluate_json(_graph_of(outputs, grad_of, wrt, jvp, hvp, jacobian).to_json(
            *outputs, grad_of=grad_of, wrt=wrt, seed=seed, batch=batch, jvp=jvp, hvp=hvp,
            jacobian=jacobian, vmap=vmap, dtype=dtype, encoding=encoding, anomaly=anomaly))

    def evaluate_json(self, body: dict) -> Result:
        """Evaluate a PROTOCOL.md request body (as Graph.to_json writes it)."""
        return Result.from_body(self.request("POST", "/v1/evaluate", json=body))

    def shapes(self, *outputs, **kwargs) -> Shapes:
        """What `evaluate` with the same arguments would return, by shape, and its cost
        (POST /v1/shapes): every tensor is sent by its shape alone and nothing is computed.
        A request too large or wrong raises as evaluate would."""
        return self.shapes_json(_graph_of(outputs, kwargs).to_json(*outputs, **kwargs,
                                                                   values=False))

    def shapes_json(self, body: dict) -> Shapes:
        """POST /v1/shapes with a request body; tensors in it may be `{"shape": [...]}`."""
        return Shapes(self.request("POST", "/v1/shapes", json=body))

    # -- one derivative: NumPy arrays in and out (as torch.func and jax) ----------------------

    def vjp(self, of, seeds, wrt=None, *, batch: bool = False, dtype: str = "float32"):
        """Σ seeds · d(of)/d(wrt): the gradient for the cotangent `seeds` (of `of`'s shape).

        With `batch=True`, `seeds` holds k cotangents, (k, *shape(of)), and each gradient
        is (k, *shape(w)): k rows of the Jacobian from one forward pass. `wrt` (Nodes or
        ids; default every parameter) one gives one array, several a tuple of them.
        """
        body = _graph_of([of], wrt).to_json(grad_of=of, wrt=wrt, seed=seeds, batch=batch,
                                            dtype=dtype)
        r = self._derivatives(body)
        return _by(wrt, r.gradients, body["grad"]["wrt"])

    def jvp(self, of, tangents: dict, *, batch: bool = False, dtype: str = "float32"):
        """Σ_x d(of)/dx · tangents[x]: the directional derivative along `tangents`
        ({input Node or id: array}; inputs left out have zero tangents).

        With `batch=True`, every tangent has a leading axis of k directions and the result
        is (k, *shape(of)). One `of` gives one array, several a tuple of them.
        """
        spec = {"of": listed(of), "tangents": tangents, "batch": batch}
        body = _graph_of([of], spec).to_json(jvp=spec, dtype=dtype)
        return _by(of, self._derivatives(body).jvp, body["jvp"]["of"])

    def hvp(self, of, tangents: dict, wrt=None, *, seed=None, batch: bool = False,
            dtype: str = "float32"):
        """Σ_j ∂²(seed · of)/∂w ∂j · tangents[j] for each w of `wrt`: the Hessian (or, when
        `wrt` and the tangents name different inputs, a block of it) times a vector.

        `seed` is needed when `of` is not a single element; with `batch=True`, k tangent
        directions give (k, *shape(w)). `wrt` (inputs; default every parameter) one gives
        one array, several a tuple of them.
        """
        spec = {"of": of, "tangents": tangents, "wrt": wrt, "seed": seed, "batch": batch}
        body = _graph_of([of], spec).to_json(hvp=spec, dtype=dtype)
        return _by(wrt, self._derivatives(body).hvp, body["hvp"]["wrt"])

    def jacobian(self, of, wrt=None, *, dtype: str = "float32"):
        """d(of)/d(wrt), of shape (*shape(of), *shape(wrt)) (torch.func.jacrev's layout); the
        server picks forward or reverse mode by the sizes.

        One `of` and one `wrt` (inputs; default every parameter) give one array; several
        give a tuple, and both several a tuple (over `of`) of tuples (over `wrt`), as jax.
        """
        spec = {"of": listed(of), "wrt": wrt}
        body = _graph_of([of], spec).to_json(jacobian=spec, dtype=dtype)
        rows = self._derivatives(body).jacobians
        by_of = {y: _by(wrt, row, body["jacobian"]["wrt"]) for y, row in rows.items()}
        return _by(of, by_of, body["jacobian"]["of"])

    def _derivatives(self, body: dict) -> Result:
        body["outputs"] = []  # the derivatives alone: no values come back
        return self.evaluate_json(body)

    def evaluate_many(self, requests: Iterable, concurrency: int = 8, *,
                      return_exceptions: bool = False, progress: bool | None = None
                      ) -> list:
        """Many evaluations, `concurrency` at a time over the connection pool; results in order.

        Each request is what `evaluate` takes: a Node, a tuple of Nodes, or a dict of
        evaluate's keyword arguments with "outputs"; or a request body (a dict with
        "nodes"). With `return_exceptions`, a failed one is its GradserveError in the list;
        otherwise the first failure (in order) is raised. A progress bar (tqdm) appears on
        stderr when it is a terminal and the work takes longer than a moment.
        """
        bodies = [_body(item) for item in requests]
        if not bodies:
            return []
        self._reserve(concurrency)
        workers = max(1, min(concurrency, len(bodies)))
        with _progress_bar(len(bodies), progress) as bar, ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(self.evaluate_json, b) for b in bodies]
            for f in futures:
                f.add_done_callback(lambda _: bar.update(1))
            results = []
            for f in futures:
                try:
                    results.append(f.result())
                except GradserveError as e:
                    if not return_exceptions:
                        for pending in futures:
                            pending.cancel()
                        raise
                    results.append(e)
            return results

    def _reserve(self, connections: int) -> None:
        """Make room for this many requests at once (the local client needs none)."""
        return None

    @classmethod
    def local(cls, **kwargs):
        """A client with the same interface that evaluates in this process (see LocalClient)."""
        from .local import LocalClient
        return LocalClient(**kwargs)


class Client(BaseClient):
    """A gradserve server over HTTP: a pooled session with retries, a context manager."""

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None,
                 timeout: float | None = 30, *, retries: int = 4, backoff: float = 0.25,
                 max_wait: float = 60.0, pool_size: int = 16):
        self.url = url.rstrip("/")
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_wait = backoff, max_wait
        self.session = requests.Session()
        self.session.headers.update({"User-Agent": f"gradserve-client/{VERSION}",
                                     "Accept": "application/json, application/problem+json"})
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"
        self._pool_size = 0
        self._reserve(pool_size)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        self.session.close()

    def _reserve(self, connections: int) -> None:
        if connections > self._pool_size:
            adapter = HTTPAdapter(pool_connections=4, pool_maxsize=connections, max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
            self._pool_size = connections

    def request(self, method: str, path: str, *, json=None, **kwargs) -> dict:
        """Send one request (retrying as the module says) and return its JSON body.

        `json` is written as strict JSON; other keyword arguments go to requests.
        An error answer raises the GradserveError subclass of its status.
        """
        if json is not None:
            kwargs["data"] = codec.dumps(json)
            kwargs["headers"] = {"Content-Type": "application/json", **kwargs.get("headers", {})}
        kwargs.setdefault("timeout", self.timeout)
        response = self._send(method, self.url + path, **kwargs)
        if response.status_code >= 400:
            raise_problem(response.status_code, _problem_of(response), response)
        return _json_of(response)

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        for attempt in itertools.count():
            last = attempt >= self.retries
            try:
                response = self.session.request(method, url, **kwargs)
            except requests.ConnectionError as e:  # refused, reset, dropped (and connect timeouts)
                if last:
                    raise ConnectError(_no_answer("connection_failed", url, e)) from e
                sleep(self._backoff(attempt))
                continue
            except requests.Timeout as e:
                raise ReadTimeoutError(_no_answer("timeout", url, e)) from e
            except requests.RequestException as e:
                raise NetworkError(_no_answer("network_error", url, e)) from e
            if response.status_code in RETRY_STATUS and not last:
                wait = retry_after(response.headers.get("Retry-After"))
                wait = self._backoff(attempt) if wait is None else wait
                if wait <= self.max_wait:  # a longer wait is the server saying: not now
                    response.close()
                    sleep(wait)
                    continue
            return response
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped at max_wait, with jitter so that many clients spread out."""
        return min(self.max_wait, self.backoff * 2 ** attempt) * random.uniform(0.5, 1.0)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _problem_of(response: requests.Response) -> dict:
    """The problem+json body, or one made up from the status for any other answer."""
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return body
    status = response.status_code
    return problem(status, f"http_{status}", response.text[:200] or response.reason or "")


def _json_of(response: requests.Response) -> dict:
    try:
        return json.loads(response.content)
    except ValueError:
        raise GradserveError(problem(response.status_code, "bad_response",
                                     "the server answered with something that is not JSON"),
                             response=response) from None


def _no_answer(code: str, url: str, e: Exception) -> dict:
    return {"type": "about:blank", "title": "No answer", "status": None, "code": code,
            "detail": f"{url}: {e}"}


def _graph_of(*named) -> Graph:
    """The Graph of the first Node among what a request names (ids alone name no graph)."""
    for n in _nodes_in(named):
        return n.graph
    raise TypeError("a request needs at least one Node (ids alone do not say which Graph)")


def _nodes_in(x):
    """Every Node in outputs, lists of Nodes and ids, and the dicts of jvp, hvp, jacobian."""
    if isinstance(x, Node):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _nodes_in(k)
            if k == "tangents" and isinstance(v, dict):
                yield from _nodes_in(list(v))
            elif k != "seed":  # arrays: no Nodes in them
                yield from _nodes_in(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _nodes_in(v)


def _by(asked, arrays: dict, ids: list[str]):
    """One array when one Node or id was asked for, else a tuple in the order of `ids`."""
    if isinstance(asked, (Node, str)):
        return arrays[ids[0]]
    return tuple(arrays[i] for i in ids)


def _body(item) -> dict:
    """One request of evaluate_many as a request body."""
    if isinstance(item, Node):
        item = (item,)
    if isinstance(item, (tuple, list)):
        return _graph_of(item).to_json(*item)
    if isinstance(item, dict):
        if "nodes" in item:
            return item
        kw = dict(item)
        outputs = kw.pop("outputs", ())
        outputs = (outputs,) if isinstance(outputs, Node) else tuple(outputs)
        return _graph_of(outputs, kw).to_json(*outputs, **kw)
    raise TypeError(f"a request is a Node, a tuple of Nodes or a dict, not {type(item).__name__}")


class _NoBar:
    """tqdm's interface, showing nothing: a short run or no terminal."""

    def update(self, n: int = 1) -> None:
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def _progress_bar(total: int, progress: bool | None):
    """tqdm on stderr, shown after PROGRESS_DELAY; None = only when stderr is a terminal."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return _NoBar()
    try:
        from tqdm import tqdm  # optional
    except ImportError:
        return _NoBar()
    return tqdm(total=total, delay=PROGRESS_DELAY, file=sys.stderr, unit="eval",
                desc="gradserve")
