"""cvunet-matting: automatic image matting as a queue-backed service."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `celery -A cvunet_matting` looks up `app`; import Celery only when asked.
    if name in {"app", "celery"}:
        from .celery_app import app

        return app
    raise AttributeError(name)
