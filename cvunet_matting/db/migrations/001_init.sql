-- Batches, their chunks, per-request tasks, and results shared by identical requests.
CREATE TABLE batches (
    id            uuid PRIMARY KEY,
    state         text NOT NULL DEFAULT 'running',  -- running | finalizing | done
    source        text NOT NULL,                    -- 'upload' or the server-side folder
    total         integer NOT NULL,
    options       jsonb NOT NULL,
    output_dir    text NOT NULL,
    zip_path      text,
    manifest_path text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

CREATE TABLE chunks (
    batch_id uuid NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    idx      integer NOT NULL,
    state    text NOT NULL DEFAULT 'queued',        -- queued | dispatched | done
    PRIMARY KEY (batch_id, idx)
);

CREATE TABLE tasks (
    id            uuid PRIMARY KEY,                  -- the Celery task id
    batch_id      uuid REFERENCES batches(id) ON DELETE CASCADE,
    chunk         integer,
    position      integer NOT NULL DEFAULT 0,
    filename      text NOT NULL,
    input_key     text NOT NULL,
    options       jsonb NOT NULL,
    output_path   text NOT NULL,                     -- relative to the data root, fixed at submit
    state         text NOT NULL DEFAULT 'pending',   -- pending | started | retry | success | failure
    attempts      integer NOT NULL DEFAULT 0,
    worker        text,
    error         text,
    idem_key      text,
    reused        boolean NOT NULL DEFAULT false,
    width         integer,
    height        integer,
    timings       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    event_at      timestamptz NOT NULL DEFAULT now()  -- time of the last applied event (orders late ones)
);
CREATE INDEX tasks_batch ON tasks (batch_id, position);
CREATE INDEX tasks_state ON tasks (state, created_at);
CREATE INDEX tasks_created ON tasks (created_at DESC);

-- One row per distinct (input, model version, output options): the idempotency key.
CREATE TABLE results (
    idem_key    text PRIMARY KEY,
    output_path text NOT NULL,
    task_id     uuid NOT NULL,
    width       integer,
    height      integer,
    created_at  timestamptz NOT NULL DEFAULT now()
);
