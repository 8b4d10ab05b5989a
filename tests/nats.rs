//! Distributed mode (SPEC §12) against a real `nats-server -js` from the project venv,
//! started here on 127.0.0.1 with a free port and a temporary store, and the real
//! binary: events in on `live.<stream>.events`, actions out on `live.<stream>.actions`
//! with their ids, context in the `live_ctx` KV bucket, a crash that loses nothing.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::Value;
use support::*;

#[test]
fn two_streams_flow_through_nats_and_bad_messages_become_error_records() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let host = Running::start(&mut host(&server, &crews));
    runtime().block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        for n in 0..10 {
            publish(&js, "a", n).await;
            publish(&js, "b", n).await;
            if n == 4 {
                js.publish("live.a.events", "not json".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        wait_for_events(&js, "a", 10).await;
        wait_for_events(&js, "b", 10).await;
        let actions = read_all(&js, "LIVE_ACTIONS").await;
        assert_once(&actions, "a", 10);
        assert_once(&actions, "b", 10);
        for stream in ["a", "b"] {
            let value = kv_value(&js, stream).await;
            assert_eq!(value["ctx"]["seen"], 10, "{value}");
            assert_eq!(value["v"], 1);
            assert!(value["last_slice"].as_i64().unwrap() >= 0);
        }
        // The host's heartbeats, on core NATS for each stream it serves.
        let mut beats = js.client().subscribe("live.b.heartbeats").await.unwrap();
        let beat = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut beats),
        )
        .await
        .expect("a heartbeat on live.b.heartbeats")
        .unwrap();
        let beat: Value = serde_json::from_slice(&beat.payload).unwrap();
        assert_eq!(beat["kind"], "__hb", "{beat}");
        let errors = read_all(&js, "LIVE_ERRORS").await;
        assert_eq!(errors.len(), 1, "{errors:?}");
        let record = &errors[0].1;
        assert_eq!(record["reason"], "invalid_event");
        assert_eq!(record["stream_id"], "a");
        assert_eq!(
            record["seq"], 11,
            "the 11th message on LIVE_EVENTS: {record}"
        );
    });
    let (code, stderr) = stop(host);
    assert_eq!(
        code, 1,
        "an invalid event makes the run end with 1: {stderr}"
    );
}

#[test]
fn a_host_killed_mid_run_loses_nothing_and_publishes_nothing_twice() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    // Stream b's crew is slow, so at the kill a has committed further than b: the
    // restarted host gets a's committed events again and must skip them.
    let crews = counter_crews(
        root.path(),
        &[("fast", "a_tick", 0.0), ("slow", "b_tick", 0.3)],
    );
    let first = Running::start(&mut host(&server, &crews));
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        for n in 0..15 {
            publish(&js, "a", n).await;
            publish(&js, "b", n).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        wait_for_events(&js, "a", 12).await;
        wait_for_events(&js, "b", 1).await;
        js
    });
    let mut first = first;
    first.kill();
    rt.block_on(async {
        for n in 15..30 {
            publish(&js, "a", n).await;
            publish(&js, "b", n).await;
        }
    });
    let second = Running::start(&mut host(&server, &crews));
    rt.block_on(async {
        wait_for_events(&js, "a", 30).await;
        let actions = wait_for_events(&js, "b", 30).await;
        assert_once(&actions, "a", 30);
        assert_once(&actions, "b", 30);
        for stream in ["a", "b"] {
            let seen = &kv_value(&js, stream).await["ctx"]["seen"];
            assert_eq!(seen, 30, "{stream}'s context survived the kill");
        }
    });
    let (code, stderr) = stop(second);
    assert_eq!(code, 0, "{stderr}");
}

/// `LIVE_CREW_FAULT` aborts the host at one point of the commit sequence; a second host
/// then finishes the run as if nothing had happened.
#[test]
fn a_crash_at_each_point_of_the_commit_sequence_loses_nothing() {
    for point in [
        "before_kv",
        "after_kv",
        "mid_publish",
        "after_publish",
        "after_ack",
    ] {
        let server = NatsServer::start(&[]);
        let root = tempfile::tempdir().unwrap();
        let crews = per_event_counter(root.path());
        let mut crashing = Running::start(host(&server, &crews).env("LIVE_CREW_FAULT", point));
        let rt = runtime();
        let js = rt.block_on(async {
            let js = client(&server).await;
            wait_for_topology(&js).await;
            // Several events per 100 ms slice, so an outbox holds several actions.
            for n in 0..6 {
                publish(&js, "a", n).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            js
        });
        let status = crashing.wait_exit(point);
        assert!(!status.success(), "{point}: {status:?}");
        rt.block_on(async {
            for n in 6..12 {
                publish(&js, "a", n).await;
            }
        });
        let second = Running::start(&mut host(&server, &crews));
        rt.block_on(async {
            let actions = wait_for_events(&js, "a", 12).await;
            assert_once(&actions, "a", 12);
            let seen = &kv_value(&js, "a").await["ctx"]["seen"];
            assert_eq!(seen, 12, "{point}: the context");
        });
        let (code, stderr) = stop(second);
        assert_eq!(code, 0, "{point}: {stderr}");
    }
}

/// A host that crashed in the middle of publishing an outbox, restarted after
/// `LIVE_ACTIONS`' duplicate window has passed, publishes only the rest of it.
#[test]
fn a_restart_past_the_duplicate_window_publishes_only_what_was_missing() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = per_event_counter(root.path());
    let mut crashing = Running::start(
        host(&server, &crews)
            .env("LIVE_CREW_NATS_DUPLICATE_WINDOW_S", "1")
            .env("LIVE_CREW_FAULT", "mid_publish"),
    );
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        for n in 0..4 {
            publish(&js, "a", n).await;
        }
        js
    });
    let status = crashing.wait_exit("mid_publish");
    assert!(!status.success(), "crashed mid-publish");
    let published = rt.block_on(read_all(&js, "LIVE_ACTIONS")).len();
    assert_eq!(
        published, 1,
        "the crash came after the first action of the outbox"
    );
    // Past the window, JetStream would no longer drop a repeated id.
    std::thread::sleep(Duration::from_millis(2500));
    let socket = root.path().join("control.sock");
    let second = Running::start(
        host(&server, &crews)
            .env("LIVE_CREW_NATS_DUPLICATE_WINDOW_S", "1")
            .env("LIVE_CREW_CONTROL_SOCKET", &socket),
    );
    // No new events come: the host finishes the outbox at its start.
    rt.block_on(async {
        let actions = wait_for_events(&js, "a", 4).await;
        assert_once(&actions, "a", 4);
    });
    // Up and serving (its signal handlers in place) before it is stopped.
    let deadline = Instant::now() + Duration::from_secs(20);
    while health(&socket).0 != 0 {
        assert!(
            Instant::now() < deadline,
            "the second host never got healthy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, stderr) = stop(second);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_standby_waits_and_takes_over_within_failover_ms() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let (active_socket, standby_socket) = (root.path().join("a.sock"), root.path().join("b.sock"));
    let mut active =
        Running::start(host(&server, &crews).env("LIVE_CREW_CONTROL_SOCKET", &active_socket));
    let rt = runtime();
    let js = rt.block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        for n in 0..5 {
            publish(&js, "a", n).await;
        }
        wait_for_events(&js, "a", 5).await;
        js
    });
    let standby =
        Running::start(host(&server, &crews).env("LIVE_CREW_CONTROL_SOCKET", &standby_socket));
    // The standby's crews are up and it says whom it waits for.
    let report = wait_for_role(&standby_socket, "standby");
    let active_name = report["nats"]["active_host"].as_str().unwrap_or_default();
    assert!(
        active_name.ends_with(&format!("-{}", active.child.id())),
        "{report}"
    );
    assert_eq!(health(&active_socket).1["nats"]["role"], "active");
    rt.block_on(async {
        for n in 5..10 {
            publish(&js, "a", n).await;
        }
        wait_for_events(&js, "a", 10).await;
    });
    active.kill();
    let killed = Instant::now();
    rt.block_on(async {
        for n in 10..15 {
            publish(&js, "a", n).await;
        }
        let actions = wait_for_events(&js, "a", 15).await;
        let taken_over = killed.elapsed();
        // failover_ms (500 in these tests) plus the standby's own start.
        assert!(
            taken_over < Duration::from_secs(5),
            "the standby took {taken_over:?} to take over"
        );
        assert_once(&actions, "a", 15);
        assert_eq!(
            kv_value(&js, "a").await["ctx"]["seen"],
            15,
            "the context carried over"
        );
    });
    let (code, report) = health(&standby_socket);
    assert_eq!(
        (code, &report["nats"]["role"]),
        (0, &serde_json::json!("active")),
        "{report}"
    );
    let (code, stderr) = stop(standby);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("waiting as a standby"), "{stderr}");
    assert!(stderr.contains("taking over"), "{stderr}");
}

#[test]
fn a_waiting_standby_stops_cleanly_on_sigterm() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let standby_socket = root.path().join("b.sock");
    let _active = Running::start(
        host(&server, &crews).env("LIVE_CREW_CONTROL_SOCKET", root.path().join("a.sock")),
    );
    runtime().block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        publish(&js, "a", 0).await;
        wait_for_events(&js, "a", 1).await;
    });
    let standby =
        Running::start(host(&server, &crews).env("LIVE_CREW_CONTROL_SOCKET", &standby_socket));
    wait_for_role(&standby_socket, "standby");
    let asked = Instant::now();
    let (code, stderr) = stop(standby);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("stopped while waiting as a standby"),
        "{stderr}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn with_create_false_a_missing_topology_is_reported_not_made() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let checked = host(&server, &crews)
        .env("LIVE_CREW_NATS_CREATE", "false")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    for missing in [
        "stream LIVE_EVENTS is missing",
        "stream LIVE_WORK is missing",
        "KV bucket live_ctx is missing",
    ] {
        assert!(stderr.contains(missing), "{missing}: {stderr}");
    }
    runtime().block_on(async {
        let js = client(&server).await;
        assert!(
            js.get_stream("LIVE_EVENTS").await.is_err(),
            "nothing was created"
        );
    });
    // Once a host has set it up, checking finds nothing to report.
    let creating = Running::start(&mut host(&server, &crews));
    runtime().block_on(async { wait_for_topology(&client(&server).await).await });
    let (code, stderr) = stop(creating);
    assert_eq!(code, 0, "{stderr}");
    let checking = Running::start(host(&server, &crews).env("LIVE_CREW_NATS_CREATE", "false"));
    std::thread::sleep(Duration::from_millis(500));
    let (code, stderr) = stop(checking);
    assert_eq!(code, 0, "{stderr}");
}

/// `kv_backend: jetstream` with file input: contexts outlive the host, from one batch run
/// to the next.
#[test]
fn kv_backend_jetstream_keeps_contexts_across_batch_runs() {
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let config = root.path().join("live-config.yaml");
    std::fs::write(
        &config,
        format!(
            "kv_backend: jetstream\nnats:\n  urls: [\"{}\"]\n",
            server.url
        ),
    )
    .unwrap();
    let events = root.path().join("events.jsonl");
    let lines: Vec<String> = (0..3)
        .map(|n| {
            format!(
                r#"{{"ts":"2025-01-01T00:00:0{n}Z","kind":"tick","stream_id":"a","payload":{{"n":{n}}}}}"#
            )
        })
        .collect();
    std::fs::write(&events, lines.join("\n") + "\n").unwrap();
    let seen_after_run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_live-crew"))
            .args(["run", "--crews"])
            .arg(&crews)
            .arg("--events")
            .arg(&events)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let last = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned();
        let action: Value = serde_json::from_str(&last).unwrap();
        action["payload"]["seen"].as_u64().unwrap()
    };
    assert_eq!(seen_after_run(), 3);
    assert_eq!(
        seen_after_run(),
        6,
        "the second run starts from the stored context"
    );
    let value = runtime().block_on(async { kv_value(&client(&server).await, "a").await });
    assert_eq!(value["ctx"]["seen"], 6, "{value}");
}

#[test]
fn the_host_rides_out_a_nats_server_restart() {
    let mut server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let socket = root.path().join("control.sock");
    let host = Running::start(host(&server, &crews).env("LIVE_CREW_CONTROL_SOCKET", &socket));
    let rt = runtime();
    rt.block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        for n in 0..5 {
            publish(&js, "a", n).await;
        }
        wait_for_events(&js, "a", 5).await;
    });
    wait_healthy(&socket);
    server.kill();
    let (code, report) = health(&socket);
    let disconnected = Instant::now() + Duration::from_secs(10);
    let mut seen = (code, report);
    while seen.0 != 1 && Instant::now() < disconnected {
        std::thread::sleep(Duration::from_millis(100));
        seen = health(&socket);
    }
    assert_eq!(seen.0, 1, "unhealthy while NATS is away: {}", seen.1);
    assert_eq!(seen.1["nats"]["connected"], false, "{}", seen.1);
    server.restart();
    rt.block_on(async {
        let js = client(&server).await;
        for n in 5..10 {
            publish(&js, "a", n).await;
        }
        let actions = wait_for_events(&js, "a", 10).await;
        assert_once(&actions, "a", 10);
        assert_eq!(kv_value(&js, "a").await["ctx"]["seen"], 10);
    });
    // The client reports the reconnect a moment after it works again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, report) = loop {
        let (code, report) = health(&socket);
        if code == 0 || Instant::now() > deadline {
            break (code, report);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(code, 0, "{report}");
    assert!(
        report["nats"]["reconnects"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(
        report["nats"]["committed"]["a"].as_i64().is_some(),
        "{report}"
    );
    let table = Command::new(env!("CARGO_BIN_EXE_live-crew"))
        .args(["status", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("nats connected, active (server 2."),
        "{table}"
    );
    assert!(table.contains("committed: a@"), "{table}");
    let (code, stderr) = stop(host);
    assert_eq!(code, 0, "{stderr}");
}

/// A seeded loop over how a host dies (a crash point, or SIGKILL after a random delay)
/// and how the events of two streams are spaced: a second host always finishes with
/// every event in exactly one action and each stream's count in its context.
#[test]
fn seeded_crashes_at_random_points_and_timings_lose_nothing() {
    const POINTS: [&str; 5] = [
        "before_kv",
        "after_kv",
        "mid_publish",
        "after_publish",
        "after_ack",
    ];
    for seed in 1..=6u64 {
        // A small LCG: the same seeds give the same runs.
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut next = |below: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % below
        };
        let fault = (next(2) == 0).then(|| POINTS[next(5) as usize]);
        let spacing = Duration::from_millis(5 + next(30));
        let kill_after = Duration::from_millis(50 + next(400));
        let label =
            format!("seed {seed}: fault {fault:?}, spacing {spacing:?}, kill after {kill_after:?}");
        let server = NatsServer::start(&[]);
        let root = tempfile::tempdir().unwrap();
        let crews = per_event_counter(root.path());
        let mut first = host(&server, &crews);
        if let Some(point) = fault {
            first.env("LIVE_CREW_FAULT", point);
        }
        let mut first = Running::start(&mut first);
        let rt = runtime();
        let js = rt.block_on(async {
            let js = client(&server).await;
            wait_for_topology(&js).await;
            let started = Instant::now();
            for n in 0..10 {
                publish(&js, "a", n).await;
                publish(&js, "b", n).await;
                tokio::time::sleep(spacing).await;
                if fault.is_none() && started.elapsed() >= kill_after {
                    break;
                }
            }
            js
        });
        if fault.is_none() {
            first.kill();
        }
        first.wait_exit(&label);
        rt.block_on(async {
            // The events the first host's run did not get to publish follow now.
            let sent = read_all(&js, "LIVE_EVENTS").await.len() as u64 / 2;
            for n in sent..20 {
                publish(&js, "a", n).await;
                publish(&js, "b", n).await;
            }
        });
        let second = Running::start(&mut host(&server, &crews));
        rt.block_on(async {
            wait_for_events(&js, "a", 20).await;
            let actions = wait_for_events(&js, "b", 20).await;
            for stream in ["a", "b"] {
                assert_once(&actions, stream, 20);
                let seen = &kv_value(&js, stream).await["ctx"]["seen"];
                assert_eq!(seen, 20, "{label}: {stream}'s context");
            }
        });
        let (code, stderr) = stop(second);
        assert_eq!(code, 0, "{label}: {stderr}");
    }
}

#[test]
fn wrong_credentials_are_a_startup_error_that_names_nats_authorization() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let users = NatsServer::start(&["--user", "alice", "--pass", "s3cret"]);
    let denied = host(&users, &crews)
        .env("LIVE_CREW_NATS_USER", "alice")
        .env("LIVE_CREW_NATS_PASSWORD", "wrong")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert_eq!(denied.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NATS authorization failed"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password is never printed: {stderr}"
    );
    let tokens = NatsServer::start(&["--auth", "t0ken"]);
    let denied = host(&tokens, &crews)
        .env("LIVE_CREW_NATS_TOKEN", "nope")
        .output()
        .unwrap();
    assert_eq!(denied.status.code(), Some(2));
    // The right password gets in: the host sets up the streams.
    let allowed = Running::start(
        host(&users, &crews)
            .env("LIVE_CREW_NATS_USER", "alice")
            .env("LIVE_CREW_NATS_PASSWORD", "s3cret"),
    );
    runtime().block_on(async {
        let client =
            async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cret".into())
                .connect(&users.url)
                .await
                .unwrap();
        wait_for_topology(&jetstream::new(client)).await;
    });
    let (code, stderr) = stop(allowed);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn an_nkey_seed_logs_in_and_a_wrong_one_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let user = nkeys::KeyPair::new_user();
    let stranger = nkeys::KeyPair::new_user();
    let config = root.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: {} }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let server = NatsServer::start(&["-c", path(&config)]);
    let refused = host(&server, &crews)
        .env("LIVE_CREW_NATS_NKEY_SEED", stranger.seed().unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NATS authorization failed"), "{stderr}");
    let seed = user.seed().unwrap();
    let admitted = Running::start(host(&server, &crews).env("LIVE_CREW_NATS_NKEY_SEED", &seed));
    runtime().block_on(async {
        let client = async_nats::ConnectOptions::with_nkey(seed.clone())
            .connect(&server.url)
            .await
            .unwrap();
        wait_for_topology(&jetstream::new(client)).await;
    });
    let (code, stderr) = stop(admitted);
    assert_eq!(code, 0, "{stderr}");
}

/// A NATS JWT (`typ` JWT, `alg` ed25519-nkey) with `claims`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: Value) -> String {
    use data_encoding::BASE64URL_NOPAD;
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{name}-{subject}"),
        "iat": 1_700_000_000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let claims = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let signed = format!("{header}.{claims}");
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature))
}

/// A `.creds` file as `nsc` writes it: the user's JWT and NKey seed.
fn creds_file(path: &Path, user_jwt: &str, seed: &str) {
    std::fs::write(
        path,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        ),
    )
    .unwrap();
}

/// A server in operator mode (decentralised JWT auth): an operator, one account with
/// JetStream, and a user of that account whose credentials file logs the host in; a user
/// the account did not sign is refused.
#[test]
fn a_credentials_file_logs_in_and_one_the_account_did_not_sign_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "live",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    // JetStream needs the server's own system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2}),
    );
    let user_claims = serde_json::json!({
        "type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
    });
    let user_jwt = jwt(&account, &user.public_key(), "host", user_claims.clone());
    let config = root.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {live}: {account_jwt}\n}}\n",
            sys = system.public_key(),
            live = account.public_key(),
        ),
    )
    .unwrap();
    let server = NatsServer::start(&["-c", path(&config)]);
    // A user signed by a stranger's key, not the account's.
    let stranger = nkeys::KeyPair::new_account();
    let forged = root.path().join("forged.creds");
    creds_file(
        &forged,
        &jwt(&stranger, &user.public_key(), "host", user_claims),
        &user.seed().unwrap(),
    );
    let refused = host(&server, &crews)
        .env("LIVE_CREW_NATS_CREDS", &forged)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("NATS authorization failed"), "{stderr}");
    let creds = root.path().join("host.creds");
    creds_file(&creds, &user_jwt, &user.seed().unwrap());
    let admitted = Running::start(host(&server, &crews).env("LIVE_CREW_NATS_CREDS", &creds));
    runtime().block_on(async {
        let client = async_nats::ConnectOptions::with_credentials_file(&creds)
            .await
            .unwrap()
            .connect(&server.url)
            .await
            .unwrap();
        let js = jetstream::new(client);
        wait_for_topology(&js).await;
        publish(&js, "a", 0).await;
        wait_for_events(&js, "a", 1).await;
    });
    let (code, stderr) = stop(admitted);
    assert_eq!(code, 0, "{stderr}");
}

/// A server older than 2.11.1 is refused at connect (exit 2); one older than 2.12.7 is
/// served with a warning. Real releases, installed by `scripts/test.sh`.
#[test]
fn an_old_server_is_refused_and_a_dated_one_warned_about() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let too_old = NatsServer::start_binary(old_nats_server("2.10.26"), &[]);
    let refused = output_within(&mut host(&too_old, &crews), Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("NATS server 2.10.26 is too old: distributed mode needs 2.11.1 or newer"),
        "{stderr}"
    );
    drop(too_old);
    let dated = NatsServer::start_binary(old_nats_server("2.12.6"), &[]);
    let served = Running::start(&mut host(&dated, &crews));
    runtime().block_on(async {
        let js = client(&dated).await;
        wait_for_topology(&js).await;
        publish(&js, "a", 0).await;
        wait_for_events(&js, "a", 1).await;
    });
    let (code, stderr) = stop(served);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("NATS server older than 2.12.7"), "{stderr}");
}

/// A CA, and a server and a client certificate it signed (with their keys), as PEM files.
struct Certificates {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn certificates(dir: &Path) -> Certificates {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let signed = |name: &str, sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            write(&format!("{name}.pem"), cert.pem()),
            write(&format!("{name}-key.pem"), key.serialize_pem()),
        )
    };
    let server = signed("server", vec!["127.0.0.1".into(), "localhost".into()]);
    let client = signed("client", vec!["live-crew".into()]);
    Certificates {
        ca: write("ca.pem", ca.pem()),
        server,
        client,
    }
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn tls_and_mutual_tls_with_the_configured_certificates() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let certs = certificates(root.path());
    let tls = [
        "--tls",
        "--tlscert",
        path(&certs.server.0),
        "--tlskey",
        path(&certs.server.1),
    ];
    // TLS: the host trusts the CA and insists on TLS.
    let server = NatsServer::start(&tls);
    let trusting = Running::start(
        host(&server, &crews)
            .env("LIVE_CREW_NATS_TLS_CA", &certs.ca)
            .env("LIVE_CREW_NATS_REQUIRE_TLS", "true"),
    );
    let client = |certs: &Certificates, url: &str, mutual: bool| {
        let mut options = async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca.clone())
            .require_tls(true);
        if mutual {
            options =
                options.add_client_certificate(certs.client.0.clone(), certs.client.1.clone());
        }
        let url = url.to_owned();
        async move { jetstream::new(options.connect(url).await.unwrap()) }
    };
    runtime().block_on(async {
        wait_for_topology(&client(&certs, &server.url, false).await).await;
    });
    let (code, stderr) = stop(trusting);
    assert_eq!(code, 0, "{stderr}");
    // A host that does not trust the server's CA cannot connect.
    let distrusting = host(&server, &crews).output().unwrap();
    let stderr = String::from_utf8_lossy(&distrusting.stderr);
    assert_eq!(distrusting.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot connect to NATS"), "{stderr}");
    drop(server);
    // Mutual TLS: the server wants a client certificate its CA signed.
    let mut mutual = tls.to_vec();
    mutual.extend(["--tlsverify", "--tlscacert", path(&certs.ca)]);
    let server = NatsServer::start(&mutual);
    let without_certificate = host(&server, &crews)
        .env("LIVE_CREW_NATS_TLS_CA", &certs.ca)
        .output()
        .unwrap();
    assert_eq!(without_certificate.status.code(), Some(2));
    let with_certificate = Running::start(
        host(&server, &crews)
            .env("LIVE_CREW_NATS_TLS_CA", &certs.ca)
            .env("LIVE_CREW_NATS_TLS_CERT", &certs.client.0)
            .env("LIVE_CREW_NATS_TLS_KEY", &certs.client.1),
    );
    runtime().block_on(async {
        let js = client(&certs, &server.url, true).await;
        wait_for_topology(&js).await;
        publish(&js, "a", 0).await;
        wait_for_events(&js, "a", 1).await;
    });
    let (code, stderr) = stop(with_certificate);
    assert_eq!(code, 0, "{stderr}");
}

/// Bad NATS arguments are usage errors that say what is wrong, before anything runs.
#[test]
fn a_stream_id_that_breaks_a_subject_and_a_server_that_is_not_there_are_named() {
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_live-crew"))
            .args(["run", "--crews"])
            .arg(&crews)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let (code, stderr) = run(&["--nats", &url, "--stream", "match.1"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--stream: stream_id 'match.1' may only contain"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--nats", &url]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to NATS at {url}")),
        "{stderr}"
    );
}

/// The metric names a PromQL expression reads: what is left once label matchers, ranges
/// and `by (...)` are gone, minus function calls and keywords.
fn metrics_in(expr: &str) -> Vec<String> {
    let stripped = regex::Regex::new(r"\{[^}]*\}|\[[^\]]*\]|\b(by|without)\s*\([^)]*\)")
        .unwrap()
        .replace_all(expr, " ");
    regex::Regex::new(r"\b([a-z_][a-z0-9_]*)\b(\s*\()?")
        .unwrap()
        .captures_iter(&stripped)
        .filter(|captures| captures.get(2).is_none())
        .map(|captures| captures[1].to_owned())
        .collect()
}

/// Every metric the Grafana dashboard (config/grafana/live-crew.json) queries is in a
/// distributed host's `/metrics`.
#[test]
fn the_grafana_dashboard_queries_only_metrics_the_host_exports() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/live-crew.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().unwrap().clone())
        .flat_map(|target| metrics_in(target["expr"].as_str().unwrap()))
        .collect();
    queried.sort();
    queried.dedup();
    for expected in ["slice_lag_seconds_bucket", "errors_total", "nats_connected"] {
        assert!(queried.iter().any(|name| name == expected), "{queried:?}");
    }
    assert!(
        !queried
            .iter()
            .any(|name| ["rate", "sum", "le", "crew"].contains(&name.as_str()))
    );
    let server = NatsServer::start(&[]);
    let root = tempfile::tempdir().unwrap();
    let crews = one_counter(root.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let host = Running::start(host(&server, &crews).args(["--metrics-addr", &addr]));
    runtime().block_on(async {
        let js = client(&server).await;
        wait_for_topology(&js).await;
        publish(&js, "a", 0).await;
        wait_for_events(&js, "a", 1).await;
    });
    let (_, text) = http_get(&addr, "/metrics");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| {
            !text.lines().any(|line| {
                line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
            })
        })
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    let (code, stderr) = stop(host);
    assert_eq!(code, 0, "{stderr}");
}
