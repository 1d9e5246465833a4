//! When a stored token counts as revoked: the SQL both backends fold into every token read and
//! into the rotation's conditional update, so that they cannot disagree.
//!
//! A token is revoked when it was revoked itself, when its grant (family) was (RFC 7009 §2.1),
//! or when a not-before mark of its user or client (`revoked_subjects`) is later than the start
//! of its grant. The grant's start is its family id, the time-ordered id of its first refresh
//! token (or of its access token when it issued none), so the mark also covers every token a
//! grant started before it issues afterwards (a rotation or refresh racing the mark). Each
//! mark is one primary-key lookup.

/// The columns every token table shares, as `t`, with `revoked_at` folded from all three; in
/// this order, which the SQLite store reads by position.
pub(crate) const TOKEN_COLUMNS: &str = "t.id AS id, t.secret_sha256 AS secret_sha256, \
    t.client_id AS client_id, t.username AS username, t.scope AS scope, \
    t.family_id AS family_id, t.issued_at AS issued_at, t.expires_at AS expires_at, \
    COALESCE(t.revoked_at, \
             (SELECT f.revoked_at FROM revoked_families f WHERE f.family_id = t.family_id), \
             (SELECT s.revoked_at FROM revoked_subjects s \
              WHERE s.kind = 'client' AND s.name = t.client_id AND t.family_id < s.not_before), \
             (SELECT s.revoked_at FROM revoked_subjects s \
              WHERE s.kind = 'user' AND s.name = t.username AND t.family_id < s.not_before)) \
    AS revoked_at";

/// Appended to the rotation's `UPDATE refresh_tokens … WHERE id = …`: the presented token is
/// neither spent nor revoked by any of the three.
pub(crate) const STILL_REDEEMABLE: &str = " AND spent_at IS NULL AND revoked_at IS NULL \
    AND NOT EXISTS (SELECT 1 FROM revoked_families f \
                    WHERE f.family_id = refresh_tokens.family_id) \
    AND NOT EXISTS (SELECT 1 FROM revoked_subjects s \
                    WHERE s.kind = 'client' AND s.name = refresh_tokens.client_id \
                    AND refresh_tokens.family_id < s.not_before) \
    AND NOT EXISTS (SELECT 1 FROM revoked_subjects s \
                    WHERE s.kind = 'user' AND s.name = refresh_tokens.username \
                    AND refresh_tokens.family_id < s.not_before)";

/// The issue time of the oldest token still stored, of either kind (ids are time-ordered, so
/// each is the first row of its primary key); NULL when there is none. A grant revocation
/// older than this covers no stored token any more and may go.
pub(crate) const OLDEST_TOKEN_ISSUED_AT: &str = "(SELECT MIN(o.issued_at) FROM \
    (SELECT * FROM (SELECT issued_at FROM access_tokens ORDER BY id LIMIT 1) a \
     UNION ALL \
     SELECT * FROM (SELECT issued_at FROM refresh_tokens ORDER BY id LIMIT 1) r) o)";

/// Seconds by which node clocks may disagree: a revocation goes only once it is this much
/// older than the oldest stored token, since `revoked_at` and `issued_at` may come from the
/// clocks of different nodes.
pub(crate) const CLOCK_SKEW_SLACK_SECS: i64 = 300;

/// Sets or moves forward a not-before mark (`$1`/`?1` kind, name, not_before, revoked_at):
/// an earlier mark never replaces a later one.
pub(crate) fn upsert_mark(placeholders: [&str; 4]) -> String {
    let [kind, name, not_before, revoked_at] = placeholders;
    format!(
        "INSERT INTO revoked_subjects (kind, name, not_before, revoked_at) \
         VALUES ({kind}, {name}, {not_before}, {revoked_at}) \
         ON CONFLICT (kind, name) DO UPDATE SET not_before = excluded.not_before, \
         revoked_at = excluded.revoked_at \
         WHERE excluded.not_before > revoked_subjects.not_before"
    )
}
