-- Accounts: who submitted what, who may sign in, and how much each may ask of the workers.
CREATE TABLE users (
    id             bigserial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    password_hash  text,                              -- argon2id; NULL: API keys only, no browser sign-in
    is_admin       boolean NOT NULL DEFAULT false,
    disabled       boolean NOT NULL DEFAULT false,
    session_epoch  integer NOT NULL DEFAULT 0,        -- bumped on sign-out and disable: old cookies stop working
    max_in_flight  integer,                           -- quotas; NULL: no limit
    max_per_day    integer,
    max_batch      integer,
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- API keys are shown once; only their SHA-256 is kept (they are 256-bit random, not passwords).
CREATE TABLE api_keys (
    id           bigserial PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    prefix       text NOT NULL,                       -- the first characters, to tell keys apart in lists
    key_hash     text NOT NULL UNIQUE,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Every task and batch belongs to a user; NULL is the operator (CLI, celery commands, work from before 004).
ALTER TABLE batches ADD COLUMN owner_id bigint REFERENCES users(id);
ALTER TABLE tasks ADD COLUMN owner_id bigint REFERENCES users(id);
CREATE INDEX tasks_owner_created ON tasks (owner_id, created_at DESC);
CREATE INDEX tasks_owner_state ON tasks (owner_id, state) WHERE state IN ('pending', 'started', 'retry');
