//! Shared context (SPEC §5): one JSON object per stream, changed only at slice end by the
//! crews' RFC 7386 merge patches, applied in the deterministic crew order.
//!
//! The rules (ACL, size, conflicts) are pure functions here; where committed contexts live
//! is the [`ContextStore`]'s business (`store.rs`).

mod acl;
mod store;

pub use acl::{KeySet, readable};
pub use store::{ContextStore, KvBackend, MemoryStore, Resume, StoreError, Stored, StreamCommit};

use std::collections::HashSet;

use serde_json::Value;

use crate::model::JsonObject;
use crate::pool::FailureReason;

/// Applies an RFC 7386 JSON Merge Patch: objects merge recursively, `null` deletes, any
/// other value replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(JsonObject::new());
    }
    if let Value::Object(target) = target {
        merge_object(target, patch);
    }
}

/// [`merge_patch`] for an object target and an object patch, as contexts are.
pub fn merge_object(target: &mut JsonObject, patch: &JsonObject) {
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// Why a crew's patch was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("crew '{crew}' may not write context key '{key}'; add it to the crew's context.write")]
    Acl { crew: String, key: String },
    #[error(
        "crew '{crew}''s patch would grow the context to {bytes} bytes, over \
         context_max_bytes ({max}); delete keys or raise context_max_bytes"
    )]
    Size {
        crew: String,
        bytes: usize,
        max: usize,
    },
}

impl PatchError {
    /// The error record's `reason`.
    pub fn reason(&self) -> FailureReason {
        match self {
            PatchError::Acl { .. } => FailureReason::ContextAcl,
            PatchError::Size { .. } => FailureReason::ContextSize,
        }
    }
}

/// One crew's patch for a slice, in crew order.
pub struct Patch<'a> {
    pub crew: &'a str,
    pub write: &'a KeySet,
    pub patch: &'a JsonObject,
}

/// The result of applying a slice's patches.
#[derive(Debug, Default)]
pub struct SliceCommit {
    /// The new context, or `None` if nothing was applied.
    pub context: Option<JsonObject>,
    /// Rejected patches by their position in the input.
    pub rejected: Vec<(usize, PatchError)>,
    /// Top-level keys written by more than one accepted patch of the slice (each extra
    /// writer counts once per key); the later writer won.
    pub conflicts: u64,
}

/// Applies a slice's patches in order. Each patch is checked against its crew's write
/// ACL and against the size limit on its own result, so a rejected patch leaves no trace.
pub fn commit_slice(context: &JsonObject, patches: &[Patch<'_>], max_bytes: usize) -> SliceCommit {
    let mut commit = SliceCommit::default();
    let mut current: Option<JsonObject> = None;
    let mut written: HashSet<&str> = HashSet::new();
    for (i, patch) in patches.iter().enumerate() {
        if let Some(key) = patch.patch.keys().find(|key| !patch.write.contains(key)) {
            commit.rejected.push((
                i,
                PatchError::Acl {
                    crew: patch.crew.to_owned(),
                    key: key.clone(),
                },
            ));
            continue;
        }
        let mut next = current.clone().unwrap_or_else(|| context.clone());
        merge_object(&mut next, patch.patch);
        let bytes = serialised_len(&next);
        if bytes > max_bytes {
            commit.rejected.push((
                i,
                PatchError::Size {
                    crew: patch.crew.to_owned(),
                    bytes,
                    max: max_bytes,
                },
            ));
            continue;
        }
        for key in patch.patch.keys() {
            if !written.insert(key) {
                commit.conflicts += 1;
            }
        }
        current = Some(next);
    }
    commit.context = current;
    commit
}

/// Length of the compact JSON text, without building it.
pub fn serialised_len(value: &JsonObject) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("JSON values always serialise");
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn merged(target: Value, patch: Value) -> Value {
        let mut target = target;
        merge_patch(&mut target, &patch);
        target
    }

    /// RFC 7386, Appendix A.
    #[test]
    fn rfc_7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            assert_eq!(
                merged(target.clone(), patch.clone()),
                want,
                "{target} + {patch}"
            );
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            "[a-c]{0,2}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn applying_a_patch_twice_changes_nothing_more(target in json_value(), patch in json_value()) {
            let once = merged(target, patch.clone());
            prop_assert_eq!(merged(once.clone(), patch), once);
        }

        #[test]
        fn null_deletes_and_other_values_land(target in json_value(), patch in json_value()) {
            let result = merged(target, patch.clone());
            if let (Value::Object(patch), Value::Object(result)) = (&patch, &result) {
                for (key, value) in patch {
                    match value {
                        Value::Null => prop_assert!(!result.contains_key(key)),
                        Value::Object(_) => prop_assert!(result[key].is_object()),
                        other => prop_assert_eq!(&result[key], other),
                    }
                }
            }
        }
    }

    fn object(value: Value) -> JsonObject {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[test]
    fn slice_commits_apply_in_order_and_count_conflicts() {
        let all = KeySet::All;
        let p1 = object(json!({"score": {"home": 1}, "a": 1}));
        let p2 = object(json!({"score": {"away": 2}}));
        let p3 = object(json!({"b": 2, "a": null}));
        let patches = [
            Patch {
                crew: "x",
                write: &all,
                patch: &p1,
            },
            Patch {
                crew: "y",
                write: &all,
                patch: &p2,
            },
            Patch {
                crew: "z",
                write: &all,
                patch: &p3,
            },
        ];
        let commit = commit_slice(&object(json!({"keep": true})), &patches, 4096);
        assert_eq!(
            Value::Object(commit.context.unwrap()),
            json!({"keep": true, "score": {"home": 1, "away": 2}, "b": 2})
        );
        assert_eq!(commit.conflicts, 2);
        assert!(commit.rejected.is_empty());
    }

    #[test]
    fn acl_and_size_violations_reject_the_whole_patch() {
        let only_score = KeySet::Keys(vec!["score".into()]);
        let all = KeySet::All;
        let sneaky = object(json!({"score": 1, "secret": 2}));
        let huge = object(json!({"blob": "x".repeat(100)}));
        let fine = object(json!({"score": 3}));
        let patches = [
            Patch {
                crew: "x",
                write: &only_score,
                patch: &sneaky,
            },
            Patch {
                crew: "y",
                write: &all,
                patch: &huge,
            },
            Patch {
                crew: "z",
                write: &only_score,
                patch: &fine,
            },
        ];
        let commit = commit_slice(&JsonObject::new(), &patches, 64);
        assert_eq!(Value::Object(commit.context.unwrap()), json!({"score": 3}));
        let reasons: Vec<(usize, &str)> = commit
            .rejected
            .iter()
            .map(|(i, e)| (*i, e.reason().as_str()))
            .collect();
        assert_eq!(reasons, [(0, "ctx_acl"), (1, "ctx_size")]);
        assert!(commit.rejected[0].1.to_string().contains("'secret'"));
        assert_eq!(commit.conflicts, 0);
    }
}
