//! Reading the audit trail a server or the CLI wrote: `home/logs/audit.jsonl` by default.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long an event may take to reach the file (the writer thread writes at once).
const AUDIT_DEADLINE: Duration = Duration::from_secs(10);
const AUDIT_POLL: Duration = Duration::from_millis(20);

/// The default audit file of a home folder.
pub fn audit_file(home: &Path) -> PathBuf {
    home.join("logs/audit.jsonl")
}

/// Every event in `path` (none if it does not exist); fails on a line that is not one JSON
/// object.
pub fn audit_events(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a partial line: {text}"
    );
    text.lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect()
}

/// The events named `event` in `path`.
pub fn events_named(path: &Path, event: &str) -> Vec<Value> {
    audit_events(path)
        .into_iter()
        .filter(|value| value["event"] == event)
        .collect()
}

/// Waits until `path` holds an event named `event` that `matches`, and returns it.
pub async fn wait_for_event(path: &Path, event: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + AUDIT_DEADLINE;
    loop {
        if let Some(found) = events_named(path, event).into_iter().find(|e| matches(e)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no matching `{event}` in {} within {AUDIT_DEADLINE:?}; it holds:\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        );
        tokio::time::sleep(AUDIT_POLL).await;
    }
}

/// Asserts the fields every event has, with `source`.
pub fn assert_common_fields(event: &Value, source: &str) {
    for field in [
        "ts",
        "event",
        "outcome",
        "client_id",
        "subject",
        "ip",
        "request_id",
        "node",
    ] {
        assert!(event.get(field).is_some(), "`{field}` missing: {event}");
    }
    let ts = event["ts"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(ts).is_ok() && ts.ends_with('Z'),
        "ts is not RFC 3339 UTC: {ts}"
    );
    assert!(!event["node"].as_str().unwrap().is_empty(), "{event}");
    assert_eq!(event["source"], source, "{event}");
}
