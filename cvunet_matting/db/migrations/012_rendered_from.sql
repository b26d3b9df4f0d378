-- The task a re-render drew its result from (POST /tasks/{id}/render, POST /batches/{id}/render):
-- its lineage, shown in the task JSON, the task page and the manifest. No foreign key: the source may
-- be deleted or expired later, and the render keeps saying where it came from (the id names no photo).
-- A pending row with a source is a render waiting for the bookkeeping worker, never for the model
-- (pipeline/dispatch.image_signature).
ALTER TABLE tasks ADD COLUMN rendered_from uuid;
