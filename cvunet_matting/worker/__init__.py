"""A Celery worker's runtime: one image's job, the device process, the watchdog, signals, metrics."""
