"""The parts of ``aioqueue.prometheus`` kept apart: ``batched`` (a job's counts handed to
prometheus_client once per loop pass) and ``asgi`` (``metrics_app``)."""
