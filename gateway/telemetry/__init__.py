"""What operators read: Prometheus metrics and log lines.

- ``metrics.py``: every metric, multiprocess-safe, and the scrape.
- ``metrics_archive.py``: a dead worker's metric files folded into archives.
- ``logs.py``: tokens kept out of log lines.
- ``log_format.py``: ``LOG_FORMAT=json``.
- ``throttled_log.py``: log lines that outsiders can repeat, rate-limited.
"""
