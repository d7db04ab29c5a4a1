-- Users, login sessions and personal API tokens.
CREATE TABLE users (
    id              uuid PRIMARY KEY,
    email           text NOT NULL,
    username        text NOT NULL,
    -- argon2id PHC string; NULL for users that cannot log in with a password.
    hashed_password text,
    roles           text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'active',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted         boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE NOT deleted;
CREATE UNIQUE INDEX users_username_key ON users (lower(username)) WHERE NOT deleted;

-- Session tokens have the form "<id>-<secret>"; only SHA-256(secret) is stored.
CREATE TABLE api_keys (
    id               text PRIMARY KEY,
    hashed_secret    bytea NOT NULL,
    user_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    login_type       text NOT NULL,           -- 'password' | 'token'
    token_name       text,                    -- set for personal API tokens
    lifetime_seconds bigint NOT NULL,
    expires_at       timestamptz NOT NULL,
    last_used        timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);
CREATE UNIQUE INDEX api_keys_token_name ON api_keys (user_id, token_name) WHERE token_name IS NOT NULL;
