"""A bare Flask JSON endpoint, the baseline that bench/http.py holds gradserve against.

    gunicorn --config service/gunicorn.conf.py bench.echo_app:app

POST /echo answers the body parsed and written again with orjson: the least a JSON
service on Flask and gunicorn can do per request.
"""

import orjson
from flask import Flask, Response, request

from service.app import Runtime
from service.config import Settings

app = Flask("echo")
# The shared gunicorn config's post_worker_init hooks SIGTERM draining onto this entry.
app.extensions["gradserve"] = Runtime(Settings())


@app.post("/echo")
def echo():
    return Response(orjson.dumps(orjson.loads(request.get_data())), mimetype="application/json")
