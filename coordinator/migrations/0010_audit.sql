-- The audit log: one row per state change, written in the transaction of
-- the change (Coder's `audit_logs`).

-- How an account logs in. Migration 0009 (OpenID Connect) adds it too;
-- whichever runs first creates it.
ALTER TABLE users ADD COLUMN IF NOT EXISTS login_type text NOT NULL DEFAULT 'password';

CREATE TABLE audit_logs (
    id             uuid PRIMARY KEY,
    time           timestamptz NOT NULL DEFAULT now(),
    -- NULL for a failed login of an unknown user; `username` keeps the
    -- name as given (or the user's name at the time).
    user_id        uuid REFERENCES users (id) ON DELETE SET NULL,
    username       text NOT NULL,
    action         text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    uuid,
    resource_name  text NOT NULL DEFAULT '',
    -- {"field": {"old": …, "new": …}}; never a secret.
    diff           jsonb NOT NULL DEFAULT '{}',
    ip             inet,
    user_agent     text NOT NULL DEFAULT '',
    status_code    integer NOT NULL
);
CREATE INDEX audit_logs_time ON audit_logs (time DESC, id);
CREATE INDEX audit_logs_user ON audit_logs (user_id, time DESC);
