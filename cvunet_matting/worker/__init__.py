"""A Celery worker's runtime: its lifecycle as bootsteps (steps.py), one image's run and job, the
device process and what it says, the watchdog, signals, metrics."""
