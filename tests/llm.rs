//! The LLM gateway (SPEC §14) through the real binary, real CrewAI and a small
//! OpenAI-compatible server on loopback (`tests/fixtures/llm/openai_server.py`): crews
//! without network or keys answer through the host, the provider sees the host's key,
//! usage is accounted, and a bad provider, key or answer fails only the crew's call.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::{event, live_crew, python};
use serde_json::Value;
use support::output_within;

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/llm/openai_server.py"
);
const KEY: &str = "sk-live-crew-test-key";

/// The test server, killed when dropped.
struct Provider {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Provider {
    fn start(dir: &Path) -> Provider {
        let port_file = dir.join("port");
        let log = dir.join("requests.jsonl");
        let child = Command::new(python())
            .arg(SERVER)
            .arg(&port_file)
            .arg(&log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                break text.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "the test server never listened");
            std::thread::sleep(Duration::from_millis(20));
        };
        Provider { child, port, log }
    }

    fn requests(&self) -> Vec<Value> {
        common::lines(&self.log)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `prompt` crew asking `model`.
fn prompt_crew(crews: &Path, name: &str, model: &str) {
    write(
        &crews.join(name).join("runtime.yaml"),
        &format!(
            "crew: {name}\ntriggers: [tick]\nrunner:\n  kind: prompt\n  llm: {model}\n  \
             user_template: \"Say hello to {name} in slice {{{{ slice }}}}.\"\n  \
             outputs: [{{kind: said, payload: {{text: \"{{{{ generated }}}}\"}}}}]\n"
        ),
    );
}

/// A plain-YAML CrewAI crew asking `model`.
fn crewai_crew(crews: &Path, name: &str, model: &str) {
    let dir = crews.join(name);
    write(
        &dir.join("agents.yaml"),
        "writer:\n  role: Writer\n  goal: Write one line\n  backstory: Brief.\n",
    );
    write(
        &dir.join("tasks.yaml"),
        "line:\n  description: Write a line about slice {slice}.\n  expected_output: One line.\n",
    );
    write(
        &dir.join("runtime.yaml"),
        &format!(
            "crew: {name}\ntriggers: [tick]\nrunner: {{kind: crewai, llm: {model}, output: {{kind: line}}}}\n"
        ),
    );
}

/// A `python` crew that answers with the names in its environment.
fn env_crew(crews: &Path) {
    let dir = crews.join("env_reporter");
    write(
        &dir.join("report.py"),
        "import os\n\ndef react(events, ctx, deps):\n    return [{\"kind\": \"env\", \"payload\": sorted(os.environ)}]\n",
    );
    write(
        &dir.join("runtime.yaml"),
        "crew: env_reporter\ntriggers: [tick]\nrunner: {kind: python, module: \"report:react\"}\n",
    );
}

/// `live-crew <command>` (`run` or `replay`) over `events` with `config`: the crews'
/// interpreter, the provider's key in the host's environment only, no LLM override,
/// JSON logs.
fn host(command: &str, config: &Path, crews: &Path, events: &Path) -> Command {
    let mut host = live_crew();
    host.args([command, "--log-format", "json", "--config"])
        .arg(config)
        .arg("--crews")
        .arg(crews)
        .arg("--events")
        .arg(events)
        .env("LIVE_CREW_PYTHON", python())
        .env_remove("LIVE_CREW_LLM")
        .env("TEST_LLM_KEY", KEY);
    host
}

/// Runs `host` to its end, which must come within two minutes.
fn finish(host: &mut Command) -> Output {
    output_within(host, Duration::from_secs(120))
}

struct Run {
    code: i32,
    actions: Vec<Value>,
    errors: Vec<Value>,
    log: String,
}

/// Runs `crews` over two ticks with `llm` as the config's `llm:` section.
fn run(root: &Path, crews: &Path, llm: &str) -> Run {
    let config = root.join("live-config.yaml");
    write(&config, &format!("llm:\n{llm}"));
    let events = root.join("events.jsonl");
    write(&events, &[event(0, "1"), event(500, "2")].concat());
    let errors = root.join("errors.jsonl");
    // Every call's record at info, with its tokens and cost.
    let out = finish(
        host("run", &config, crews, &events)
            .arg("--errors")
            .arg(&errors)
            .env("LIVE_CREW_SLOW_CALL_MS", "0"),
    );
    Run {
        code: out.status.code().unwrap(),
        actions: std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect(),
        errors: common::lines(&errors),
        log: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn providers(provider: &Provider) -> String {
    format!(
        "  providers:\n    test: {{base_url: 'http://127.0.0.1:{}/v1', api_key_env: TEST_LLM_KEY}}\n    \
         keyless: {{base_url: 'http://127.0.0.1:{}/v1', api_key_env: NOT_SET_ANYWHERE}}\n  \
         prices: {{test/model-a: {{prompt: 1.5, completion: 6.0}}}}\n",
        provider.port, provider.port
    )
}

#[test]
fn crews_without_network_or_keys_answer_through_the_gateway_and_usage_is_accounted() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    prompt_crew(&crews, "greeter", "test/model-a");
    crewai_crew(&crews, "writer", "test/model-b");
    env_crew(&crews);
    let out = run(root.path(), &crews, &providers(&provider));
    assert_eq!(out.code, 0, "{}", out.log);

    // Both crews answered from the server, with the default network: false.
    let said: Vec<&str> = out
        .actions
        .iter()
        .filter(|a| a["crew"] == "greeter")
        .map(|a| a["payload"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        said,
        [
            "gateway answer to: Say hello to greeter in slice 0.",
            "gateway answer to: Say hello to greeter in slice 1."
        ]
    );
    let lines: Vec<&Value> = out
        .actions
        .iter()
        .filter(|a| a["crew"] == "writer")
        .collect();
    assert_eq!(lines.len(), 2, "{:?}", out.actions);
    for line in lines {
        let raw = line["payload"]["raw"].as_str().unwrap();
        assert!(raw.starts_with("gateway answer to: "), "{line}");
    }

    // The provider saw the host's key on every request, and the model without its
    // provider; no crew's environment held the key.
    let requests = provider.requests();
    assert!(requests.len() >= 4, "{requests:?}");
    for request in &requests {
        assert_eq!(
            request["authorization"],
            format!("Bearer {KEY}"),
            "{request}"
        );
        assert_eq!(request["path"], "/v1/chat/completions");
    }
    let models: std::collections::BTreeSet<&str> = requests
        .iter()
        .map(|r| r["body"]["model"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["model-a", "model-b"].into());
    for env in out.actions.iter().filter(|a| a["crew"] == "env_reporter") {
        let names: Vec<&str> = env["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(!names.contains(&"TEST_LLM_KEY"), "{names:?}");
    }
    assert!(!out.log.contains(KEY), "the key never reaches the log");

    // The summary's tokens are the server's usage; the cost is the price table's.
    let usage = |model: &str| -> (u64, u64) {
        requests
            .iter()
            .filter(|r| r["body"]["model"] == model)
            .map(|r| {
                let u = &r["usage"];
                (
                    u["prompt_tokens"].as_u64().unwrap(),
                    u["completion_tokens"].as_u64().unwrap(),
                )
            })
            .fold((0, 0), |(p, c), (p2, c2)| (p + p2, c + c2))
    };
    let (prompt_a, completion_a) = usage("model-a");
    let (prompt_b, completion_b) = usage("model-b");
    let summary = out
        .log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|r| {
            r["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("live-crew: "))
        })
        .unwrap();
    let table = summary["msg"].as_str().unwrap();
    let row = |crew: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(crew))
            .unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert!(
        table.contains("tokens") && table.contains("cost $"),
        "{table}"
    );
    assert_eq!(
        row("greeter")[5],
        (prompt_a + completion_a).to_string(),
        "{table}"
    );
    let cost = (prompt_a as f64 * 1.5 + completion_a as f64 * 6.0) / 1e6;
    assert_eq!(row("greeter")[6], format!("{cost:.4}"), "{table}");
    assert_eq!(
        row("writer")[5],
        (prompt_b + completion_b).to_string(),
        "{table}"
    );
}

#[test]
fn the_governor_holds_the_concurrency_limit_for_all_crews_and_429s_are_retried() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    for n in 0..6 {
        prompt_crew(&crews, &format!("slow_{n}"), "test/slow-300");
    }
    prompt_crew(&crews, "limited", "test/ratelimited-2");
    let llm = providers(&provider) + "  limits:\n    test/slow-300: {concurrency: 2}\n";
    let out = run(root.path(), &crews, &llm);
    assert_eq!(out.code, 0, "{}", out.log);
    assert_eq!(
        out.actions.len(),
        14,
        "every crew answered both slices: {:?}",
        out.actions
    );
    let requests = provider.requests();
    let slow: Vec<u64> = requests
        .iter()
        .filter(|r| r["body"]["model"] == "slow-300")
        .map(|r| r["in_flight"].as_u64().unwrap())
        .collect();
    assert_eq!(slow.len(), 12, "{requests:?}");
    let most = slow.iter().max().copied().unwrap();
    assert_eq!(
        most, 2,
        "never more than the limit, and the limit reached: {slow:?}"
    );
    // Two 429s with Retry-After, then the answer: the crew never saw them.
    let statuses: Vec<u64> = requests
        .iter()
        .filter(|r| r["body"]["model"] == "ratelimited-2")
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [429, 429, 200, 200], "{requests:?}");
}

#[test]
fn a_bad_provider_key_or_answer_fails_only_that_crews_call_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    prompt_crew(&crews, "nowhere", "elsewhere/model");
    prompt_crew(&crews, "keyless", "keyless/model");
    prompt_crew(&crews, "garbled", "test/malformed");
    prompt_crew(&crews, "bloated", "test/huge");
    prompt_crew(&crews, "stalled", "sluggish/slow-3000");
    prompt_crew(&crews, "fine", "test/model-a");
    let llm = providers(&provider).replace(
        "  prices:",
        &format!(
            "    sluggish: {{base_url: 'http://127.0.0.1:{}/v1', timeout_ms: 200}}\n  prices:",
            provider.port
        ),
    ) + "  max_response_bytes: 100000\n";
    let out = run(root.path(), &crews, &llm);
    assert_eq!(out.code, 1, "failed calls make the status 1: {}", out.log);
    let fine = out.actions.iter().filter(|a| a["crew"] == "fine").count();
    assert_eq!(
        fine, 2,
        "the healthy crew answers both slices: {:?}",
        out.actions
    );
    let message = |crew: &str| -> String {
        let errors: Vec<&Value> = out.errors.iter().filter(|e| e["crew"] == crew).collect();
        assert_eq!(errors.len(), 2, "{crew}: {:?}", out.errors);
        assert!(
            errors.iter().all(|e| e["reason"] == "runner_error"),
            "{errors:?}"
        );
        errors[0]["message"].as_str().unwrap().to_owned()
    };
    let nowhere = message("nowhere");
    assert!(
        nowhere.contains("unknown_provider") && nowhere.contains("'elsewhere'"),
        "{nowhere}"
    );
    let keyless = message("keyless");
    assert!(
        keyless.contains("no_key") && keyless.contains("NOT_SET_ANYWHERE"),
        "{keyless}"
    );
    let garbled = message("garbled");
    assert!(garbled.contains("not JSON"), "{garbled}");
    let bloated = message("bloated");
    assert!(bloated.contains("too_large"), "{bloated}");
    let stalled = message("stalled");
    assert!(
        stalled.contains("provider") && stalled.contains("timed out"),
        "{stalled}"
    );
}

#[test]
fn a_recorded_run_replays_offline_byte_for_byte_and_a_changed_prompt_shows() {
    let root = tempfile::tempdir().unwrap();
    let tape = root.path().join("tape");
    let crews = root.path().join("crews");
    prompt_crew(&crews, "greeter", "test/model-a");
    crewai_crew(&crews, "writer", "test/model-b");
    let recorded = root.path().join("recorded.jsonl");
    {
        let provider = Provider::start(root.path());
        let config = root.path().join("live-config.yaml");
        write(&config, &format!("llm:\n{}", providers(&provider)));
        let events = root.path().join("events.jsonl");
        write(&events, &[event(0, "1"), event(500, "2")].concat());
        let out = finish(
            host("run", &config, &crews, &events)
                .arg("--output")
                .arg(&recorded)
                .arg("--record-llm")
                .arg(&tape),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(common::lines(&recorded).len(), 4);
        // The provider is gone from here on: the replays are offline.
    }
    let replay = |extra: &[&str]| {
        finish(
            host(
                "replay",
                &root.path().join("live-config.yaml"),
                &crews,
                &root.path().join("events.jsonl"),
            )
            .arg("--llm")
            .arg(&tape)
            .arg("--expect")
            .arg(&recorded)
            .args(extra)
            .env_remove("TEST_LLM_KEY"),
        )
    };
    let same = replay(&[]);
    let log = String::from_utf8_lossy(&same.stderr).into_owned();
    assert!(
        same.status.success(),
        "the replay reproduces the run: {log}"
    );

    // A changed prompt asks what the tape does not hold: its calls fail, and --expect
    // shows the difference.
    let runtime = crews.join("greeter/runtime.yaml");
    let text = std::fs::read_to_string(&runtime).unwrap();
    std::fs::write(&runtime, text.replace("Say hello", "Say goodbye")).unwrap();
    let errors = root.path().join("errors.jsonl");
    let changed = replay(&["--errors", errors.to_str().unwrap()]);
    let log = String::from_utf8_lossy(&changed.stderr).into_owned();
    assert_eq!(changed.status.code(), Some(1), "{log}");
    let errors = common::lines(&errors);
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert_eq!(error["crew"], "greeter");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("not_recorded") && message.contains("holds no answer"),
            "{message}"
        );
    }
    assert!(
        log.contains("greeter"),
        "the expect report names the crew: {log}"
    );
}

#[test]
fn spent_budgets_skip_switch_model_or_disable_as_configured() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    // One request is more than a budget of 5 tokens an hour: from the second call on
    // each crew is over it.
    let budgets = [
        ("skipper", "{tokens_per_hour: 5}"),
        (
            "switcher",
            "{tokens_per_hour: 5, on_exceed: 'model:test/cheap'}",
        ),
        ("quitter", "{usd_per_hour: 0.000001, on_exceed: disable}"),
    ];
    for (crew, budget) in budgets {
        prompt_crew(&crews, crew, "test/model-a");
        let runtime = crews.join(crew).join("runtime.yaml");
        let text = std::fs::read_to_string(&runtime).unwrap();
        std::fs::write(&runtime, format!("{text}budget: {budget}\n")).unwrap();
    }
    let config = root.path().join("live-config.yaml");
    write(&config, &format!("llm:\n{}", providers(&provider)));
    let events = root.path().join("events.jsonl");
    write(
        &events,
        &[event(0, "1"), event(500, "2"), event(1000, "3")].concat(),
    );
    let errors = root.path().join("errors.jsonl");
    let out = finish(
        host("run", &config, &crews, &events)
            .arg("--errors")
            .arg(&errors),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let actions: Vec<Value> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let slices = |crew: &str| -> Vec<i64> {
        actions
            .iter()
            .filter(|a| a["crew"] == crew)
            .map(|a| a["slice"].as_i64().unwrap())
            .collect()
    };
    let errors = common::lines(&errors);
    let budget_errors = |crew: &str| -> Vec<i64> {
        errors
            .iter()
            .filter(|e| e["crew"] == crew && e["reason"] == "budget")
            .map(|e| e["slice"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(slices("skipper"), [0], "{log}");
    assert_eq!(budget_errors("skipper"), [1, 2], "{errors:?}");
    assert_eq!(slices("switcher"), [0, 1, 2], "{log}");
    assert!(budget_errors("switcher").is_empty(), "{errors:?}");
    // Its first request went to its own model, the later ones to the cheaper one.
    let switched: Vec<String> = provider
        .requests()
        .iter()
        .filter(|r| {
            r["body"]["messages"][0]["content"]
                .as_str()
                .is_some_and(|text| text.contains("switcher"))
        })
        .map(|r| r["body"]["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(switched, ["model-a", "cheap", "cheap"]);
    assert_eq!(slices("quitter"), [0], "{log}");
    assert_eq!(budget_errors("quitter"), [1, 2], "{errors:?}");
    assert!(
        log.contains("crew disabled: its LLM budget is spent"),
        "{log}"
    );
    let message = errors
        .iter()
        .find(|e| e["crew"] == "skipper")
        .map(|e| e["message"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(message.contains("tokens_per_hour 5"), "{message}");
}

#[test]
fn a_crewai_tool_is_called_through_the_gateway() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llm/score_crew");
    for file in ["score_crew.py", "runtime.yaml"] {
        write(
            &crews.join("scorer").join(file),
            &std::fs::read_to_string(fixture.join(file)).unwrap(),
        );
    }
    let out = run(root.path(), &crews, &providers(&provider));
    assert_eq!(out.code, 0, "{}", out.log);
    let raws: Vec<&str> = out
        .actions
        .iter()
        .map(|a| a["payload"]["raw"].as_str().unwrap())
        .collect();
    assert_eq!(
        raws, ["Final answer from the tool: home leads 2-1"; 2],
        "{}",
        out.log
    );
    // Per call: the request with the tool's schema, then the one with its result.
    let requests = provider.requests();
    assert_eq!(requests.len(), 4, "{requests:?}");
    let first = &requests[0]["body"];
    assert_eq!(
        first["tools"][0]["function"]["name"], "score_lookup",
        "{first}"
    );
    let second = &requests[1]["body"]["messages"];
    let tool_message = second
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result in {second}"));
    assert_eq!(tool_message["content"], "home leads 2-1");
}

#[test]
fn a_streams_budget_holds_for_all_its_crews_and_only_for_that_stream() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    prompt_crew(&crews, "greeter", "test/model-a");
    let config = root.path().join("live-config.yaml");
    let llm = providers(&provider) + "  budgets: {s: {tokens_per_hour: 5}}\n";
    write(&config, &format!("llm:\n{llm}"));
    let events = root.path().join("events.jsonl");
    let on = |stream: &str, ms: u64| {
        event(ms, "1").replace(
            "\"stream_id\":\"s\"",
            &format!("\"stream_id\":\"{stream}\""),
        )
    };
    write(
        &events,
        &[on("s", 0), on("t", 0), on("s", 500), on("t", 500)].concat(),
    );
    let errors = root.path().join("errors.jsonl");
    let out = finish(
        host("run", &config, &crews, &events)
            .arg("--errors")
            .arg(&errors),
    );
    let answered: Vec<(String, i64)> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .map(|a| {
            (
                a["stream_id"].as_str().unwrap().to_owned(),
                a["slice"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut answered = answered;
    answered.sort();
    assert_eq!(
        answered,
        [
            ("s".to_owned(), 0),
            ("t".to_owned(), 0),
            ("t".to_owned(), 1)
        ],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors = common::lines(&errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (&errors[0]["reason"], &errors[0]["stream_id"]),
        (&"budget".into(), &"s".into()),
        "{errors:?}"
    );
    assert!(
        errors[0]["message"]
            .as_str()
            .unwrap()
            .contains("stream 's'"),
        "{errors:?}"
    );
}

#[test]
fn a_request_after_its_call_ended_is_refused_and_the_host_goes_on() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    // Answers at once, then asks the gateway from a thread after the call is over.
    write(
        &crews.join("straggler/late.py"),
        "import threading, time\nimport live_crew_runner\n\n\
         def ask_late():\n    time.sleep(0.2)\n    live_crew_runner._channel.send({\"type\": \"llm_request\", \"id\": 99, \"call\": None, \
         \"model\": \"test/model-a\", \"body\": {\"messages\": []}})\n\n\
         def react(events, ctx, deps):\n    threading.Thread(target=ask_late).start()\n    return [{\"kind\": \"done\"}]\n",
    );
    write(
        &crews.join("straggler/runtime.yaml"),
        "crew: straggler\ntriggers: [tick]\nrunner: {kind: python, module: \"late:react\"}\n",
    );
    prompt_crew(&crews, "greeter", "test/model-a");
    let events = root.path().join("events.jsonl");
    // The second tick comes a second later, after the late request.
    write(&events, &[event(0, "1"), event(1000, "2")].concat());
    let config = root.path().join("live-config.yaml");
    write(&config, &format!("llm:\n{}", providers(&provider)));
    let errors = root.path().join("errors.jsonl");
    let out = finish(
        host("run", &config, &crews, &events)
            .arg("--live")
            .arg("--errors")
            .arg(&errors),
    );
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(log.contains("LLM request outside a call; refused"), "{log}");
    let answered = |crew: &str| {
        std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .filter(|line| line.contains(&format!("\"crew\":\"{crew}\"")))
            .count()
    };
    assert_eq!(
        (answered("straggler"), answered("greeter")),
        (2, 2),
        "{log}"
    );
    assert!(
        provider
            .requests()
            .iter()
            .all(|r| r["body"]["messages"] != serde_json::json!([])),
        "the late request never reached the provider"
    );
}

#[test]
fn a_crewbase_agents_own_model_goes_through_the_gateway() {
    let root = tempfile::tempdir().unwrap();
    let provider = Provider::start(root.path());
    let crews = root.path().join("crews");
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("runners/python/tests/fixtures/crewai_class");
    for file in ["class_crew.py", "config/agents.yaml", "config/tasks.yaml"] {
        write(
            &crews.join("reporter").join(file),
            &std::fs::read_to_string(fixture.join(file)).unwrap(),
        );
    }
    // No runner.llm: the agent keeps its own `llm: anthropic/claude-sonnet-4`.
    write(
        &crews.join("reporter/runtime.yaml"),
        "crew: reporter\ntriggers: [tick]\nrunner: {kind: crewai, class: \"class_crew:ReportCrew\", output: {kind: report}}\n",
    );
    let llm = format!(
        "  providers:\n    anthropic: {{base_url: 'http://127.0.0.1:{}/v1', api_key_env: TEST_LLM_KEY}}\n",
        provider.port
    );
    let config = root.path().join("live-config.yaml");
    write(&config, &format!("llm:\n{llm}"));
    let events = root.path().join("events.jsonl");
    write(&events, &event(0, r#"{"team":"home"}"#));
    let out = finish(&mut host("run", &config, &crews, &events));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let action: Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert!(
        action["payload"]["raw"]
            .as_str()
            .unwrap()
            .starts_with("gateway answer to: "),
        "{action}"
    );
    let requests = provider.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["body"]["model"], "claude-sonnet-4");
    assert_eq!(requests[0]["authorization"], format!("Bearer {KEY}"));
}
