"""The parts of ``aioqueue.prometheus`` kept apart: ``batched`` (a job's counts handed to
prometheus_client in batches) and ``asgi`` (``metrics_app``)."""
