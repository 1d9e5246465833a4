-- PostgreSQL only (0007_rate_buckets): SQLite serves one node and needs no such table. This empty
-- migration keeps one version numbering across both backends.
SELECT 1;
