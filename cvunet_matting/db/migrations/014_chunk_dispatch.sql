-- When a chunk was claimed for dispatch, and when its dispatcher had published all its images. Between
-- the two its pending rows are on their way to Redis, message by message (a 200-image chunk took 5.3 s
-- on a loaded host), and reconcile must not take them for lost (reads._UNFINISHED, reads.orphan_chunks).
-- NULL for chunks dispatched before: they are treated as published, as they were until now.
ALTER TABLE chunks ADD COLUMN dispatched_at timestamptz;
ALTER TABLE chunks ADD COLUMN published_at timestamptz;
