"""The SDK's footprint: what importing it pulls in, and its public names."""

from __future__ import annotations

import subprocess
import sys

import client


def test_importing_the_sdk_loads_neither_the_service_nor_its_dependencies():
    program = ("import sys, client, client.ops; "
               "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                                check=True).stdout.split())
    assert {"client", "autograd", "numpy", "requests"} <= loaded
    assert not loaded & {"service", "flask", "pydantic", "orjson", "werkzeug", "gunicorn", "tqdm"}


def test_every_public_name_is_exported_and_every_error_has_one_root():
    for name in client.__all__:
        assert getattr(client, name) is not None
    errors = [getattr(client, n) for n in client.__all__ if n.endswith("Error")]
    assert len(errors) == 11
    assert all(issubclass(e, client.GradserveError) for e in errors)
