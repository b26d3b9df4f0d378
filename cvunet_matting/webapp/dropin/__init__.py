"""Drop-in endpoints for clients written for other services: remove.bg's `POST /v1.0/removebg` and
rembg's server (`POST`/`GET /api/remove`). Each request becomes an ordinary task of the key's user
(queued, run by a worker, in the history, counted by the quotas), held until it ends (running.py)."""
