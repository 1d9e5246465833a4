-- A grant revocation must outlive every token of the grant, whatever the lifetimes are
-- configured to later: the time is fixed when the grant is revoked.
ALTER TABLE revoked_families ADD COLUMN keep_until INTEGER;
