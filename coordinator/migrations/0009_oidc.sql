-- OpenID Connect login.

-- How an account logs in: 'password', or 'oidc' (no password; its
-- hashed_password stays NULL, so password login never matches it).
ALTER TABLE users ADD COLUMN login_type text NOT NULL DEFAULT 'password';

-- An account's identity at a provider: linked by issuer and subject, never
-- by email alone.
CREATE TABLE user_links (
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    login_type text NOT NULL,
    issuer     text NOT NULL,
    subject    text NOT NULL,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject)
);
CREATE UNIQUE INDEX user_links_user ON user_links (user_id, login_type);

-- Logins in flight: keyed by SHA-256 of the state (a bearer value that the
-- browser also holds in a cookie), used once, expiring after ten minutes.
CREATE TABLE oidc_login_states (
    state_hash    bytea PRIMARY KEY,
    nonce         text NOT NULL,
    pkce_verifier text NOT NULL,
    redirect      text NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_login_states_expires ON oidc_login_states (expires_at);
