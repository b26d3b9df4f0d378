-- A key that reads /metrics and nothing else: Prometheus scrapes with it instead of an admin's key
-- (a leaked scrape key then shows counts, never anyone's work, and cannot act as its owner).
ALTER TABLE api_keys ADD COLUMN metrics_only boolean NOT NULL DEFAULT false;
