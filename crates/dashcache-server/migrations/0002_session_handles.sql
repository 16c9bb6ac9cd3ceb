-- Sessions are now kept under their handle (a keyed hash of the bearer token), never the token
-- itself. Rows written before held the token in clear: they are dropped, and their users log in
-- again.
DELETE FROM sessions;
