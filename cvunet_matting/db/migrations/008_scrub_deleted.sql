-- Deleted and expired work keeps no personal data: the row stays for the counts and the operator's
-- record of what ran (ids, owner, states and failure codes, times, attempts, sizes, worker), never
-- what names or describes the photo: its file name, its options, the error text (it can quote a
-- path), the hash of its bytes (whether there was one stays: '' is a file refused on arrival, which
-- the day's quota counts apart) and the paths, which carry its name. writes.py scrubs each row as
-- it is deleted (its paths once its files are purged) or expired; this scrubs those from before.
UPDATE tasks SET filename = '', options = '{}', error = NULL, idem_key = NULL
    WHERE expired_at IS NOT NULL;
UPDATE tasks SET input_key = CASE WHEN input_key = '' THEN '' ELSE 'erased' END, output_path = ''
    WHERE expired_at IS NOT NULL AND (deleted_at IS NULL OR purged_at IS NOT NULL);
UPDATE batches SET source = CASE WHEN source = 'upload' THEN source ELSE 'folder' END, options = '{}', error = NULL
    WHERE expired_at IS NOT NULL;
