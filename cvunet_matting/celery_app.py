"""The Celery application: configured from `celeryconfig`, tasks named in its `include`."""

from celery import Celery

app = Celery("cvunet_matting")
app.config_from_object("celeryconfig")
