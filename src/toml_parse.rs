//! TOML text into a typed value, naming every offending key. Shared by the config file
//! (`config/`) and the users and clients files (`store/toml_file.rs`); each adds its own file
//! name and error type, so this module knows neither.

/// One key that could not be read: its dotted path (empty for the whole text) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    pub key: String,
    pub message: String,
}

/// Deserialises a TOML document into `T`, reporting every unknown key and every value of the
/// wrong type with its key path, not just the first (serde stops at the first error, so each
/// offending key is reported, taken out, and the rest tried again).
pub fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, Vec<KeyProblem>> {
    match parse_partial(text) {
        (Some(value), problems) if problems.is_empty() => Ok(value),
        (_, problems) => Err(problems),
    }
}

/// As [`parse`], also returning what could be read with the offending keys left out
/// (`None` when the text is not TOML or the rest does not deserialise either).
pub fn parse_partial<T: serde::de::DeserializeOwned>(text: &str) -> (Option<T>, Vec<KeyProblem>) {
    let one_line = |message: String| message.split_whitespace().collect::<Vec<_>>().join(" ");
    // Nothing more can be said about a file that is not TOML. Its line and column, not the
    // line itself as toml's Display quotes it: that line may hold a password (a database URL),
    // and problems are logged and audited.
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(err) => {
            let at = err.span().map_or_else(String::new, |span| {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!(" (line {line}, column {column})")
            });
            let problem = KeyProblem {
                key: String::new(),
                message: format!("not valid TOML{at}: {}", one_line(err.message().to_owned())),
            };
            return (None, vec![problem]);
        }
    };
    let mut problems = Vec::new();
    // Each round removes one offending key; a file cannot have more keys than characters.
    for _ in 0..=text.len() {
        let attempt = serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone()));
        let err = match attempt {
            Ok(value) => return (Some(value), problems),
            Err(err) => err,
        };
        let mut path: Vec<String> = err
            .path()
            .iter()
            .map_while(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            })
            .collect();
        let message = without_string_values(&one_line(err.inner().to_string()));
        if let Some(unknown) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            // Depending on where serde noticed, the path may already end with the key.
            if path.last().map(String::as_str) != Some(unknown) {
                path.push(unknown.to_owned());
            }
        }
        problems.push(KeyProblem {
            key: path.join("."),
            message,
        });
        if !remove_key(&mut table, &path) {
            break;
        }
    }
    (None, problems)
}

/// serde names a string of the wrong type or value by its text (`invalid type: string
/// "…", expected …`); the text may be a secret put under the wrong key, so it is left out.
fn without_string_values(message: &str) -> String {
    let Some(start) = message.find("string \"") else {
        return message.to_owned();
    };
    let quoted = start + "string \"".len();
    // serde quotes with Rust's Debug escapes: a quote inside the text is `\"`.
    let mut escaped = false;
    let end = message[quoted..].char_indices().find_map(|(at, c)| {
        let closes = c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        closes.then_some(quoted + at)
    });
    match end {
        Some(end) => format!("{}string{}", &message[..start], &message[end + 1..]),
        None => format!("{}string", &message[..start]),
    }
}

/// Removes the key at `path` (a chain of table keys); false if there was nothing to remove.
fn remove_key(table: &mut toml::Table, path: &[String]) -> bool {
    match path {
        [] => false,
        [last] => table.remove(last).is_some(),
        [first, rest @ ..] => match table.get_mut(first) {
            Some(toml::Value::Table(inner)) => remove_key(inner, rest),
            _ => table.remove(first).is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Shape {
        port: Option<u16>,
        url: Option<String>,
    }

    #[test]
    fn a_line_that_is_not_toml_is_named_by_position_not_quoted() {
        let text = "port = 1\nurl = \"postgres://tg:S3cret@db/tg\n";

        let problems = parse::<Shape>(text).unwrap_err();

        assert_eq!(problems.len(), 1);
        assert!(!problems[0].message.contains("S3cret"), "{problems:?}");
        assert!(problems[0].message.contains("line 2"), "{problems:?}");
    }

    #[test]
    fn a_string_of_the_wrong_type_is_not_quoted() {
        let text = "port = \"S3cret \\\" quoted\"\n";

        let problems = parse::<Shape>(text).unwrap_err();

        assert_eq!(problems[0].key, "port");
        assert!(!problems[0].message.contains("S3cret"), "{problems:?}");
        assert!(!problems[0].message.contains("quoted"), "{problems:?}");
        assert!(
            problems[0].message.contains("invalid type: string"),
            "{problems:?}"
        );
    }
}
