-- The task a re-render drew its result from (POST /tasks/{id}/render, POST /batches/{id}/render):
-- its lineage, shown in the task JSON, the task page and the manifest. No foreign key: the source may
-- be deleted or expired later, and the render keeps saying where it came from (the id names no photo).
-- A pending row with a source is a render waiting for the bookkeeping worker, never for the model
-- (pipeline/dispatch.image_signature).
ALTER TABLE tasks ADD COLUMN rendered_from uuid;
-- The version of the model that made a result (its raw matte), as the worker's idempotency key names
-- it: a re-render registers its result for reuse under the key the worker would compute for that
-- input and those options (image/reuse_key.py). NULL for results made before, and for failures.
ALTER TABLE tasks ADD COLUMN model_version text;
