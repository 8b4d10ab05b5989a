//! The deployment files of `deploy/` (SPEC §18) against the real binary. This machine has
//! no container engine, so the Dockerfile and compose file are checked, not run: they
//! parse, they reference only files that exist, and they call only commands and flags the
//! binary has. The systemd unit goes through `systemd-analyze verify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy().join(name)).unwrap()
}

fn yaml(name: &str) -> Value {
    serde_saphyr::from_str(&read(name)).unwrap_or_else(|err| panic!("{name}: {err}"))
}

/// `live-crew <args...> --help`: its help text, or a panic if the binary has no such
/// command.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_live-crew"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "live-crew {args:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Every `--flag` of a command line is in the subcommand's help.
fn assert_command_exists(command: &[&str]) {
    let text = help(&command[..1]);
    for flag in command.iter().filter(|arg| arg.starts_with("--")) {
        assert!(
            text.contains(flag),
            "live-crew {} has no {flag}",
            command[0]
        );
    }
}

#[test]
fn the_compose_file_uses_only_files_that_exist_and_commands_the_binary_has() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "nats",
        "scheduler",
        "worker-1",
        "worker-2",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "no service {name}");
    }
    let hosts: Vec<(&String, &Value)> = (services.iter())
        .filter(|(_, service)| service["image"] == "live-crew")
        .collect();
    assert_eq!(
        hosts.len(),
        3,
        "the scheduler and two workers run live-crew"
    );
    for (name, service) in hosts {
        let command: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no command"))
            .iter()
            .map(|arg| arg.as_str().unwrap())
            .collect();
        assert_command_exists(&command);
        let build = &service["build"];
        let context = deploy().join(build["context"].as_str().unwrap());
        assert!(
            context
                .join(build["dockerfile"].as_str().unwrap())
                .is_file()
        );
    }
    // Every file a service mounts from the repository exists (named volumes aside).
    for (name, service) in services {
        let volumes = service["volumes"].as_array().into_iter().flatten();
        for host in volumes.map(|volume| volume.as_str().unwrap().split(':').next().unwrap()) {
            if host.starts_with('.') {
                assert!(
                    deploy().join(host).exists(),
                    "{name}: {host} does not exist"
                );
            }
        }
    }
    // Prometheus scrapes the live-crew services on the port their config serves.
    let prometheus = yaml("prometheus.yml");
    let config = yaml("live-config.yaml");
    let port = config["metrics_addr"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .unwrap();
    assert_eq!(targets.len(), 3);
    for target in targets {
        let (service, target_port) = target.as_str().unwrap().split_once(':').unwrap();
        assert!(services.contains_key(service), "{service} is no service");
        assert_eq!(target_port, port);
    }
}

#[test]
fn the_container_config_loads_and_the_dockerfile_copies_what_exists() {
    let out = Command::new(env!("CARGO_BIN_EXE_live-crew"))
        .args(["config", "--config"])
        .arg(deploy().join("live-config.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerfile = read("Dockerfile");
    let root = deploy().join("..");
    for line in dockerfile.lines().filter(|line| line.starts_with("COPY ")) {
        if line.contains("--from=") {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(
                root.join(source).exists(),
                "{line}: {source} does not exist"
            );
        }
    }
    let entry = dockerfile
        .lines()
        .find(|line| line.starts_with("CMD "))
        .expect("a CMD");
    let command: Vec<String> = serde_json::from_str(entry.trim_start_matches("CMD ")).unwrap();
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    assert_command_exists(&command);
}

#[test]
fn the_systemd_unit_verifies_and_keeps_the_sandboxs_needs() {
    let unit = read("live-crew.service");
    for setting in [
        "Delegate=yes",
        "KillMode=mixed",
        "RuntimeDirectory=live-crew",
    ] {
        assert!(unit.lines().any(|line| line == setting), "no {setting}");
    }
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("an ExecStart");
    let mut args = exec.split_whitespace();
    assert_eq!(args.next(), Some("/usr/local/bin/live-crew"));
    let command: Vec<&str> = args.collect();
    assert_command_exists(&command);
    // Verified as installed, with the binary where the unit expects it.
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("live-crew.service");
    std::fs::write(
        &installed,
        unit.replace("/usr/local/bin/live-crew", env!("CARGO_BIN_EXE_live-crew")),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .output()
        .expect("systemd-analyze (Debian's systemd package) checks the unit");
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}
