-- Retention: when a task's or batch's files were removed (CVUNET_RETENTION_DAYS after it finished).
-- The rows stay, as history; pages and the API say "expired" instead of offering the files.
ALTER TABLE tasks ADD COLUMN expired_at timestamptz;
ALTER TABLE batches ADD COLUMN expired_at timestamptz;
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE expired_at IS NULL;
