-- Expiring stale pairing requests runs inside every decision and every new request. With only the
-- (status, created_at_ms) index, that UPDATE visited every pending request to read its expiry, so a
-- backlog of N pending requests made each decision O(N). This index answers it with a range scan.
CREATE INDEX pairing_requests_by_status_expiry ON pairing_requests (status, expires_at_ms);
