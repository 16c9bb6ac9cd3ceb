-- Provider access tokens, sealed (AES-256-GCM, bound to the connection id) and base64-encoded:
-- never stored in clear.
CREATE TABLE provider_credentials (
    connection_id TEXT PRIMARY KEY REFERENCES provider_connections (id),
    sealed TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Transactions; ids sort by time (posted_at first), so keyset pagination walks them newest first.
CREATE TABLE transactions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount_cents BIGINT NOT NULL,
    description TEXT NOT NULL,
    posted_at BIGINT NOT NULL
);

CREATE INDEX transactions_by_account ON transactions (account_id, id);
