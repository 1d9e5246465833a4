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
    // Nothing more can be said about a file that is not TOML; toml's message has the line.
    let mut table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(err) => {
            let problem = KeyProblem {
                key: String::new(),
                message: one_line(err.to_string()),
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
        let message = one_line(err.inner().to_string());
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
