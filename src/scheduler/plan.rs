//! A crew as the scheduler uses it: the runtime file's scheduling fields, with needs
//! resolved to crew indexes in run order.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{BacklogPolicy, CrewSpec, Crews, Need, Triggers, WaitPolicy};
use crate::context::KeySet;

/// A crew as the scheduler uses it: needs resolved to crew indexes in run order.
pub(super) struct Plan {
    pub(super) name: Arc<str>,
    pub(super) triggers: Triggers,
    pub(super) needs: Vec<PlanNeed>,
    pub(super) wait_policy: WaitPolicy,
    pub(super) stride: i64,
    pub(super) backlog: BacklogPolicy,
    pub(super) timeout_ms: u64,
    pub(super) read: KeySet,
    pub(super) write: KeySet,
    pub(super) reads: bool,
    pub(super) writes: bool,
    /// Slices after its run slice at whose end the crew's patch applies: a crew that
    /// looks ahead really runs once those slices closed (and this breaks the loop of a
    /// look-ahead on a crew that waits for this crew's context).
    pub(super) patch_delay: i64,
    /// Gone from the crews folder (hot reload).
    pub(super) retired: bool,
}

pub(super) struct PlanNeed {
    /// `crew:<name>@<k>` or `event:<kind>@<k>`.
    pub(super) key: String,
    pub(super) offset: i64,
    pub(super) target: NeedTarget,
}

pub(super) enum NeedTarget {
    Crew(usize),
    Event(String),
}

impl Plan {
    pub(super) fn from_crews(crews: &Crews) -> Vec<Plan> {
        let index: HashMap<&str, usize> = crews
            .as_slice()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        (crews.as_slice().iter())
            .map(|spec| Plan::from_spec(spec, &index))
            .collect()
    }

    /// The plan of `spec`, whose needs name crews by their indexes in `index`.
    pub(super) fn from_spec(spec: &CrewSpec, index: &HashMap<&str, usize>) -> Plan {
        Plan {
            name: spec.name.as_str().into(),
            triggers: spec.triggers.clone(),
            needs: spec
                .needs
                .iter()
                .map(|need| PlanNeed {
                    key: need.deps_key(),
                    offset: need.offset(),
                    target: match need {
                        Need::Crew { crew, .. } => NeedTarget::Crew(index[crew.as_str()]),
                        Need::Event { kind, .. } => NeedTarget::Event(kind.clone()),
                    },
                })
                .collect(),
            wait_policy: spec.wait_policy,
            stride: i64::try_from(spec.slice_stride).unwrap_or(i64::MAX),
            backlog: spec.backlog_policy,
            timeout_ms: spec.timeout_ms,
            read: spec.context.read.clone(),
            write: spec.context.write.clone(),
            reads: !spec.context.read.is_empty(),
            writes: !spec.context.write.is_empty(),
            patch_delay: match spec.wait_policy {
                WaitPolicy::None => 0,
                _ => spec
                    .needs
                    .iter()
                    .map(Need::offset)
                    .max()
                    .unwrap_or(0)
                    .max(0),
            },
            retired: false,
        }
    }

    /// The crew left the crews folder (hot reload): it takes no new trigger and nobody
    /// needs it; what it runs already still finishes, commits and is emitted.
    pub(super) fn retire(&mut self) {
        self.triggers = Triggers::Kinds(Vec::new());
        self.needs.clear();
        self.retired = true;
    }
}
