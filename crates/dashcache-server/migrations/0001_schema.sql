-- The reference service's schema, in the SQL that SQLite and PostgreSQL both speak.
-- Times are Unix milliseconds (BIGINT); ids are text chosen by the application.

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE user_roles (
    user_id TEXT NOT NULL REFERENCES users (id),
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_activity BIGINT NOT NULL,
    ip TEXT,
    user_agent TEXT,
    global_version BIGINT NOT NULL,
    user_version BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX sessions_by_user ON sessions (user_id);

-- 'global', or 'user:<id>': bumping a version revokes every session issued under an older one.
CREATE TABLE security_versions (
    scope TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

CREATE TABLE provider_connections (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL,
    alias TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (user_id, provider, alias)
);

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    connection_id TEXT NOT NULL REFERENCES provider_connections (id),
    name TEXT NOT NULL,
    balance_cents BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE INDEX accounts_by_user ON accounts (user_id);

-- OAuth states issued while the cache was down: the database keeps them one-time instead.
CREATE TABLE oauth_states (
    token_hash TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
