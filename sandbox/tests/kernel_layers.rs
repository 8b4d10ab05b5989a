//! The kernel layers, each on its own: network and pid namespaces, Landlock, seccomp.
//! A test is skipped, with a message, where the host lacks its layer.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;

use common::{python, sh, stdout};
use live_crew_sandbox::{FsRules, Layer, Sandbox};

fn sandbox_with(layer: Layer) -> Option<Sandbox> {
    let sandbox = Sandbox::probe();
    if sandbox.has(layer) {
        Some(sandbox)
    } else {
        eprintln!("skipped: no {layer} layer here");
        None
    }
}

#[tokio::test]
async fn without_network_nothing_connects_not_even_loopback() {
    let Some(sandbox) = sandbox_with(Layer::Netns) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let code = format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 2)\n    print('connected')\nexcept OSError as e:\n    print(e.errno)"
    );
    let mut spec = python("offline", &code);
    spec.isolation.no_network = true;
    assert!(sandbox.layers_for(&spec).contains(&"netns"));
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(
        stdout(&mut child).await.trim(),
        libc::ENETUNREACH.to_string()
    );
    // The same crew with the network connects.
    spec.isolation.no_network = false;
    assert!(!sandbox.layers_for(&spec).contains(&"netns"));
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(stdout(&mut child).await.trim(), "connected");
}

/// Crews without network join one empty namespace that the host made once, rather than
/// each making its own (see `layers::empty_netns`).
#[tokio::test]
async fn crews_without_network_share_one_namespace_apart_from_the_hosts() {
    let Some(sandbox) = sandbox_with(Layer::Netns) else {
        return;
    };
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let mut spec = sh("netns", "readlink /proc/self/ns/net");
    spec.isolation.no_network = true;
    let mut first = sandbox.spawn(&spec).unwrap();
    let mut second = sandbox.spawn(&spec).unwrap();
    let (first, second) = (stdout(&mut first).await, stdout(&mut second).await);
    assert!(first.starts_with("net:["), "{first}");
    assert_eq!(first, second);
    assert_ne!(first.trim(), host.to_str().unwrap());
}

#[tokio::test]
async fn the_runner_is_pid_1_of_its_own_namespace() {
    let Some(sandbox) = sandbox_with(Layer::PidNamespace) else {
        return;
    };
    let mut spec = sh("init", "echo $$");
    spec.isolation.pid_namespace = true;
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(stdout(&mut child).await.trim(), "1");
    assert!(child.wait().await.unwrap().success());
    // The next child, without the layer, is back in the host's namespace.
    spec.isolation.pid_namespace = false;
    let mut child = sandbox.spawn(&spec).unwrap();
    assert_eq!(stdout(&mut child).await.trim(), child.id().to_string());
}

#[tokio::test]
async fn landlock_allows_the_workdir_and_grants_and_nothing_else() {
    let Some(sandbox) = sandbox_with(Layer::Landlock) else {
        return;
    };
    let outside = tempfile::tempdir().unwrap();
    let granted = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    std::fs::write(granted.path().join("data"), "d").unwrap();
    let try_it = |what: &str, command: String| {
        format!("if {command} 2>/dev/null; then echo '{what} ok'; else echo '{what} denied'; fi; ")
    };
    let out = outside.path().display();
    let script = [
        try_it("workdir", "echo x > \"$HOME/f\"".into()),
        try_it(
            "grant",
            format!("cat {}/data >/dev/null", granted.path().display()),
        ),
        try_it("secret", format!("cat {out}/secret >/dev/null")),
        try_it("write", format!("echo x > {out}/new")),
        try_it("shadow", "cat /etc/shadow >/dev/null".into()),
        try_it("proc", "cat /proc/1/cmdline >/dev/null".into()),
    ]
    .concat();
    let mut spec = sh("confined", &script);
    spec.isolation.filesystem = Some(FsRules {
        read: vec![PathBuf::from(granted.path())],
        write: Vec::new(),
    });
    let mut child = sandbox.spawn(&spec).unwrap();
    let output = stdout(&mut child).await;
    assert_eq!(
        output.lines().collect::<Vec<_>>(),
        [
            "workdir ok",
            "grant ok",
            "secret denied",
            "write denied",
            "shadow denied",
            "proc denied"
        ]
    );
    assert!(!outside.path().join("new").exists());
}

#[tokio::test]
async fn a_granted_path_that_is_gone_is_a_clear_spawn_error() {
    let Some(sandbox) = sandbox_with(Layer::Landlock) else {
        return;
    };
    let mut spec = sh("confined", "true");
    spec.isolation.filesystem = Some(FsRules {
        read: vec![PathBuf::from("/nonexistent/grant")],
        write: Vec::new(),
    });
    let message = sandbox.spawn(&spec).unwrap_err().to_string();
    assert!(
        message.contains("'confined'") && message.contains("/nonexistent/grant"),
        "{message}"
    );
}

#[tokio::test]
async fn seccomp_denies_with_eperm_and_threads_still_work() {
    let Some(sandbox) = sandbox_with(Layer::Seccomp) else {
        return;
    };
    // PTRACE_TRACEME, unshare(CLONE_NEWUSER) and socket(AF_UNIX) fail with EPERM; a
    // thread (clone3, answered ENOSYS, then clone) and a socketpair still work.
    let code = "import ctypes, socket, threading\n\
                libc = ctypes.CDLL(None, use_errno=True)\n\
                print(libc.ptrace(0, 0, None, None), ctypes.get_errno())\n\
                print(libc.unshare(0x10000000), ctypes.get_errno())\n\
                print(libc.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0), ctypes.get_errno())\n\
                socket.socketpair()\n\
                t = threading.Thread(target=lambda: None); t.start(); t.join(); print('thread')";
    let mut spec = python("filtered", code);
    spec.isolation.seccomp = true;
    let mut child = sandbox.spawn(&spec).unwrap();
    let eperm = libc::EPERM;
    assert_eq!(
        stdout(&mut child).await.lines().collect::<Vec<_>>(),
        [
            format!("-1 {eperm}"),
            format!("-1 {eperm}"),
            format!("-1 {eperm}"),
            "thread".into()
        ]
    );
    assert!(child.wait().await.unwrap().success());
}
