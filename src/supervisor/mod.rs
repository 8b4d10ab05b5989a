//! The supervisor: one actor task per crew runner process (SPEC §6).
//!
//! PLACEHOLDER API, implementation in progress.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::calls::{CallFailure, CallOutcome, CrewPool, FailureReason};
use crate::config::{CrewSpec, GlobalConfig};
use crate::protocol::Call;

/// Handles to every crew's actor.
pub struct Supervisor {
    crews: HashMap<String, mpsc::Sender<(Call, oneshot::Sender<CallOutcome>)>>,
}

impl Supervisor {
    /// Starts one actor per crew. Runners start in the background; calls wait for them.
    pub fn start(crews: &[CrewSpec], global: &GlobalConfig) -> Supervisor {
        let _ = (crews, global);
        Supervisor {
            crews: HashMap::new(),
        }
    }

    /// Shuts every runner down in protocol order and waits for them.
    pub async fn shutdown(self) {}
}

impl CrewPool for Supervisor {
    fn call(
        &self,
        crew: &str,
        call: Call,
    ) -> impl std::future::Future<Output = CallOutcome> + Send + 'static {
        let sender = self.crews.get(crew).cloned();
        let crew = crew.to_owned();
        async move {
            let (reply, outcome) = oneshot::channel();
            match sender {
                Some(sender) if sender.send((call, reply)).await.is_ok() => {
                    outcome.await.unwrap_or_else(|_| Err(disabled(&crew)))
                }
                _ => Err(disabled(&crew)),
            }
        }
    }
}

fn disabled(crew: &str) -> CallFailure {
    CallFailure {
        reason: FailureReason::Disabled,
        message: format!("crew '{crew}' is not running"),
    }
}
