"""The reads and actions behind the dashboard (``aioqueue.web``), on ``aioqueue.admin.Admin``."""
