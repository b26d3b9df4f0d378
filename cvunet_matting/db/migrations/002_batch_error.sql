-- A batch whose ZIP or manifest could not be written (disk full...) says why.
ALTER TABLE batches ADD COLUMN error text;
