"""The Celery application: configured from `celeryconfig`, tasks named in its `include`, and the
worker's lifecycle as bootsteps (worker/steps.py).

The steps are registered by name, as Celery names its own: a worker's blueprint loads them when it
builds the worker, so a process that imports the app only to publish (the web side) never loads the
worker's runtime.
"""

from celery import Celery

app = Celery("cvunet_matting")
app.config_from_object("celeryconfig")
app.steps["worker"].add("cvunet_matting.worker.steps:DeviceHostStep")
app.steps["consumer"].add("cvunet_matting.worker.steps:LivenessStep")
app.steps["consumer"].add("cvunet_matting.worker.steps:EventBatchStep")
