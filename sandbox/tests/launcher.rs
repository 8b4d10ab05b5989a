//! Planning and launching as two steps, through the `Launcher` trait.

mod common;

use std::sync::Arc;

use common::{sh, stdout};
use live_crew_sandbox::{Launcher, Sandbox};

#[tokio::test]
async fn a_plan_launches_through_the_trait_as_planned() {
    let sandbox = Sandbox::probe();
    let launcher: Arc<dyn Launcher> = Arc::new(sandbox.cold_launcher());
    let mut spec = sh("two_steps", "pwd; echo \"$GREETING\"");
    spec.env.push(("GREETING".into(), "hello".into()));
    let planned = sandbox.plan(&spec).unwrap();
    let workdir = planned.plan.workdir.clone();
    let mut child = launcher.launch(planned).await.unwrap();
    assert_eq!(child.workdir(), workdir);
    assert_eq!(
        stdout(&mut child).await,
        format!("{}\nhello\n", workdir.display())
    );
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_plan_dropped_unlaunched_leaves_nothing_behind() {
    let sandbox = Sandbox::probe();
    let planned = sandbox.plan(&sh("never_launched", "true")).unwrap();
    let workdir = planned.plan.workdir.clone();
    assert!(workdir.is_dir());
    drop(planned);
    assert!(!workdir.exists());
}
