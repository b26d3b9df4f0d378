-- When a batch's finalizer claimed it: a claim older than the task's time limit belongs to a
-- finalizer that died (killed for memory, host lost), and reconcile restarts it.
ALTER TABLE batches ADD COLUMN finalizing_since timestamptz;
