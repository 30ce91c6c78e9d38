"""WSGI apps whose response body fails while it is written, for tests/e2e/test_worker.py."""


def _broken(first: bytes):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield first
            raise RuntimeError("the body broke")

        return body()

    return app


small = _broken(b"partial")
large = _broken(b"x" * 300_000)
