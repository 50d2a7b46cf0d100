"""The HTTP face of Edgewise: REST API under ``/v1`` and the dashboard at ``/``.

``app.py`` builds the FastAPI app (:func:`edgewise.server.app.create_app`) around a running
store, credentials and ingest pipeline; ``routes/`` holds one router per resource;
``problems.py`` turns every error into a problem+json body; ``web/`` is the dashboard's
static files (no CDN).
"""
