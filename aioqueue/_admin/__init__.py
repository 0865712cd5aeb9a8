"""What ``aioqueue.admin`` does not show: its records and readers (records.py), and the
reads and actions behind the dashboard (``aioqueue.web``), on ``aioqueue.admin.Admin``."""
