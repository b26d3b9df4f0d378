"""The command lines: `cvunet-matting` (local matting, admin verbs) and the operator's Celery verbs."""
