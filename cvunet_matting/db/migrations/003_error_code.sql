-- What kind of failure a task ended with (refused, crashed, timeout, storage, internal), so that
-- requeue can skip refused inputs and storage failures can be requeued once storage answers again;
-- and how many times a task was sent back to the queue.
ALTER TABLE tasks ADD COLUMN error_code text;
ALTER TABLE tasks ADD COLUMN requeues integer NOT NULL DEFAULT 0;
