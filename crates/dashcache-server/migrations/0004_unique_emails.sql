-- One account per e-mail address, whatever its case.
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
