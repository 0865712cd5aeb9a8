"""A FastAPI app that hands work to aioqueue: ``uvicorn examples.fastapi_app.app:app``
with ``aioqueue run examples.fastapi_app.tasks:worker`` beside it."""
