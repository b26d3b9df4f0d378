-- Deleted by its owner: the files go at once (expired_at is set too, so every reader that knows
-- retention offers no file); the row stays as the record of what ran, out of its owner's history.
-- purged_at: when its files were removed. A web process killed between the two leaves it NULL, and
-- retention's next sweep removes them.
ALTER TABLE tasks ADD COLUMN deleted_at timestamptz, ADD COLUMN purged_at timestamptz;
ALTER TABLE batches ADD COLUMN deleted_at timestamptz, ADD COLUMN purged_at timestamptz;
CREATE INDEX tasks_unpurged ON tasks (deleted_at) WHERE deleted_at IS NOT NULL AND purged_at IS NULL;
