-- How sure the model was of each cut-out (image/confidence.py, 0-1, high: sure), from its raw matte.
-- On the result too, so that a reused result answers with the score of the run that made it.
-- NULL for tasks finished before scores were kept, and for those that did not succeed.
ALTER TABLE tasks ADD COLUMN confidence real;
ALTER TABLE results ADD COLUMN confidence real;
