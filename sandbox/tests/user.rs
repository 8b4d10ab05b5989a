//! Running the crew as another user. Alone in its binary because it gives the test
//! process supplementary groups, which the crew must not keep.

mod common;

use common::{is_root, sh, stdout};
use live_crew_sandbox::{Sandbox, User};
use nix::unistd::{Gid, setgroups};

#[tokio::test]
async fn runs_as_the_given_user_without_the_hosts_groups() {
    if !is_root() {
        eprintln!("skipped: needs root to change user");
        return;
    }
    setgroups(&[Gid::from_raw(4), Gid::from_raw(27)]).unwrap();
    let mut spec = sh("user", "id -u; id -g; id -G; stat -c '%u:%g %a' .");
    spec.user = Some(User {
        uid: 65534,
        gid: 65534,
    });
    let mut child = Sandbox::probe().spawn(&spec).unwrap();
    let out = stdout(&mut child).await;
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["65534", "65534", "65534", "65534:65534 700"]
    );
    assert!(child.wait().await.unwrap().success());
}
