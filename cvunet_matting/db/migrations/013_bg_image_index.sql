-- A result drawn over a background image (options.bg_image, image/encoding.py) reads that image from
-- the inputs' store as it reads its own input: a delete, retention and the orphan sweep keep an input
-- while an unexpired task names it either way (reads.inputs_no_longer_used). Few tasks name one, so a
-- partial index answers the look-up without reading every row's options.
CREATE INDEX IF NOT EXISTS tasks_bg_image ON tasks ((options->>'bg_image')) WHERE (options->>'bg_image') IS NOT NULL;
