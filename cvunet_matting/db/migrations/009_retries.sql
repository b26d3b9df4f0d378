-- Each retry of a task by its owner (or for them, by an admin): a retry runs the image again, so it
-- counts toward the owner's files of the day (reads.owner_load) like a new submission does.
CREATE TABLE task_retries (
    task_id    uuid NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    owner_id   bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    retried_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_retries_owner ON task_retries (owner_id, retried_at);
