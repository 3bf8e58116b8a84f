-- The first form of migration 0002 ("pending expiry index") landed and was then replaced in place by
-- "connect and expiry indexes", which also creates device_tokens_by_device. Databases that applied the
-- first form are reconciled on upgrade (see `SUPERSEDED_MIGRATIONS` in the store) and get the index they
-- lack here; for every other database this is a no-op.
CREATE INDEX IF NOT EXISTS device_tokens_by_device ON device_tokens (device_id, role, token_id);
