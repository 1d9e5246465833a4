-- PostgreSQL only (0008_published_keys): SQLite serves one node and needs no such table. This empty
-- migration keeps one version numbering across both backends.
SELECT 1;
