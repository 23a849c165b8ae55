"""gunicorn settings for the web service: `gunicorn -c python:llmconn.gunicorn_conf ...`.

Only the hooks prometheus-client's multiprocess mode needs (llmconn/metrics.py): the sample
files of a previous run are removed at start, and a dead worker's live gauges are forgotten.
https://prometheus.github.io/client_python/multiprocess/
"""

import glob
import os


def on_starting(server):
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
