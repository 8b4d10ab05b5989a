//! Which context keys a crew may read and write (SPEC §5, `context.read`/`context.write`).

use std::sync::Arc;

use crate::model::JsonObject;

/// A set of top-level context keys; `"*"` means all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySet {
    All,
    Keys(Vec<String>),
}

impl KeySet {
    /// The keys of a runtime file's list, where `"*"` stands for all.
    pub fn from_list(list: Vec<String>) -> Self {
        if list.iter().any(|k| k == "*") {
            KeySet::All
        } else {
            KeySet::Keys(list)
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        match self {
            KeySet::All => true,
            KeySet::Keys(keys) => keys.iter().any(|k| k == key),
        }
    }

    /// No key at all (`[]`): a crew that reads nothing needs no snapshot, and one that
    /// writes nothing never holds a commit back.
    pub fn is_empty(&self) -> bool {
        matches!(self, KeySet::Keys(keys) if keys.is_empty())
    }
}

/// The part of a context a crew may read.
pub fn readable(context: &Arc<JsonObject>, read: &KeySet) -> Arc<JsonObject> {
    match read {
        KeySet::All => context.clone(),
        KeySet::Keys(keys) => Arc::new(
            keys.iter()
                .filter_map(|key| context.get(key).map(|value| (key.clone(), value.clone())))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn reads_are_filtered_by_acl() {
        let Value::Object(context) = json!({"a": 1, "b": 2}) else {
            unreachable!()
        };
        let context = Arc::new(context);
        let only_a = readable(&context, &KeySet::Keys(vec!["a".into(), "zz".into()]));
        assert_eq!(Value::Object((*only_a).clone()), json!({"a": 1}));
        assert!(Arc::ptr_eq(&readable(&context, &KeySet::All), &context));
    }
}
