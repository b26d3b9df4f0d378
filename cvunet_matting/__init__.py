"""cvunet-matting: automatic image matting as a queue-backed service."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `celery -A cvunet_matting` looks up `app`; import Celery only when asked.
    if name in {"app", "celery"}:
        from .celery_app import app

        return app
    # The Python API (library.py), as rembg's: NumPy, Pillow and the model's code load only when asked.
    if name in {"remove", "new_session"}:
        from . import library

        return getattr(library, name)
    raise AttributeError(name)
