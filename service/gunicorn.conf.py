"""gunicorn settings for gradserve, all derived from the GRADSERVE_* environment.

    gunicorn --config service/gunicorn.conf.py service.wsgi:app
"""

import ctypes
import os
import tempfile

# One BLAS thread per worker, set before NumPy is first imported: the workers are the
# parallelism, and a worker's threads would only fight its siblings for the cores.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def _tune_malloc() -> None:
    """Keep large freed buffers in the heap instead of unmapping them: a fresh 16 MB NumPy
    array otherwise page-faults all of its memory in again (~20% of a 4M-element step).
    Forked workers inherit the setting. glibc only; MALLOC_* variables, if set, win."""
    if any(k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 2**20)  # glibc's most
    libc.mallopt(m_trim_threshold, 256 * 2**20)


_tune_malloc()

_SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None  # RAM-backed where there is one

# Prometheus multiprocess mode (service/metrics.py): each worker writes its figures to files
# in one directory and /metrics sums them. It must be chosen before prometheus_client is first
# imported (the app is preloaded after this file runs): a fresh directory, unless the
# environment names one.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gradserve-metrics-",
                                                              dir=_SHM)
    os.environ["_GRADSERVE_OWNS_METRICS_DIR"] = "1"  # env, not a global: survives a HUP reload
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

import glob  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402

from service.config import Settings  # noqa: E402

_settings = Settings()

bind = [_settings.bind]
workers = _settings.workers
# The work is CPU-bound and holds the GIL: one request per process at a time, in the worker's
# one thread. Its event loop reads requests whole first, so slow or idle clients hold no
# worker, and keeps connections alive between requests (service/worker.py).
worker_class = "service.worker.Worker"
preload_app = True
backlog = 2048
# A worker silent for this long is killed: the deadline plus time to answer 504.
timeout = int(_settings.deadline_s) + 30
graceful_timeout = int(_settings.drain_s) + int(_settings.deadline_s) + 5
# Idle kept-alive connections close after this long: longer than nginx's upstream
# keepalive_timeout (deploy/nginx.conf), so that nginx never reuses one being closed.
keepalive = 5
# Recycle workers now and then so that no slow leak outlives them.
max_requests = 20000
max_requests_jitter = 2000
worker_tmp_dir = _SHM
proc_name = "gradserve"
loglevel = _settings.log_level
errorlog = "-"
accesslog = None  # the service writes one structured line per request itself
# gunicorn >= 25 opens a control socket at one fixed path per user; several instances on one
# host (replicas, tests) would fight over it, and nothing here uses it.
control_socket_disable = True


def post_fork(server, worker):
    """Cap each worker's address space: what the shape estimate misses becomes a MemoryError
    (answered 413), not an OOM-killed worker."""
    cap = _settings.worker_memory_bytes
    if cap:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def post_worker_init(worker):
    """On SIGTERM: /readyz turns 503 at once, and the worker stops after drain_s (default 0),
    finishing the request in flight either way."""
    runtime = worker.wsgi.extensions["gradserve"]
    runtime.listeners = tuple(s.sock for s in worker.sockets)  # service/shedding.py reads them
    stop = worker.handle_exit

    def handle_exit(sig, frame):
        runtime.draining = True
        if _settings.drain_s > 0:
            threading.Timer(_settings.drain_s, stop, (sig, frame)).start()
        else:
            stop(sig, frame)

    signal.signal(signal.SIGTERM, handle_exit)


def when_ready(server):
    if not _settings.api_keys and not _settings.loopback:
        logging.getLogger("gunicorn.error").warning(
            "\n" + "!" * 78 + "\n!! gradserve is listening on %s WITHOUT API KEYS: anyone who can"
            " reach it\n!! can use it. Set GRADSERVE_API_KEYS, or bind to 127.0.0.1.\n"
            + "!" * 78, _settings.bind)


def on_starting(server):
    """Metrics start from zero: files left in the directory by an earlier run (a restarted
    container's) would add that run's counts. Runs once in the master, before any fork."""
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)


def child_exit(server, worker):
    """A dead worker's counts stay in the sums, folded into an archive; its in-flight gauge
    leaves them (service/metrics.py)."""
    from service.metrics import retire
    retire(worker.pid)


def on_exit(server):
    if os.environ.get("_GRADSERVE_OWNS_METRICS_DIR"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
