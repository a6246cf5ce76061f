//! The sample events of `events/`, loaded by the tests that run the Lambda binaries on them, with a
//! record of which ones were used, so that a sample no test runs is noticed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// The sample events, remembering which ones a test loaded.
pub struct Samples {
    dir: PathBuf,
    used: BTreeSet<String>,
}

impl Default for Samples {
    fn default() -> Samples {
        Samples::new()
    }
}

impl Samples {
    pub fn new() -> Samples {
        Samples {
            dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events"),
            used: BTreeSet::new(),
        }
    }

    /// The event in `events/<name>`.
    pub fn load(&mut self, name: &str) -> Value {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
        self.used.insert(name.to_owned());
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name} is not JSON: {err}"))
    }

    /// Sample files named `<prefix>*.json` that no [`Samples::load`] asked for, sorted.
    pub fn unused(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .expect("list events/")
            .map(|entry| entry.expect("events/ entry").file_name())
            .filter_map(|name| name.into_string().ok())
            .filter(|name| name.starts_with(prefix) && name.ends_with(".json"))
            .filter(|name| !self.used.contains(name))
            .collect();
        names.sort();
        names
    }
}
