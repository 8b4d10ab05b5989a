//! The LLM gateway (SPEC §14): crews ask the host for completions over the runner
//! protocol (`llm_request`), and the host alone talks to the providers, so crews need
//! neither network nor API keys.
//!
//! A provider is any OpenAI-compatible chat-completions endpoint, configured under
//! `llm.providers`; a crew names a model as `<provider>/<model>`. The host reads each
//! provider's key from its own environment (`api_key_env`), never logs it and never
//! passes it to a crew. Each answer's `usage` is accounted per call ([`LlmUsage`]),
//! priced by `llm.prices`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::protocol::{HostMessage, LlmError, LlmRequest, LlmResponse};

/// `llm:` in the global configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSettings {
    /// By name: the `<provider>` of `<provider>/<model>`.
    pub providers: BTreeMap<String, ProviderSettings>,
    /// Prices by `<provider>/<model>`, in USD per million tokens.
    pub prices: BTreeMap<String, Price>,
    /// Limits by `<provider>` or `<provider>/<model>`, shared by every crew and stream.
    pub limits: BTreeMap<String, Limits>,
    /// Budgets by stream, for all its crews together.
    pub budgets: BTreeMap<String, Budget>,
    /// The largest answer accepted from a provider, in bytes.
    pub max_response_bytes: usize,
    /// `run --record-llm` or `replay --llm`; not a config setting.
    #[serde(skip)]
    pub tape: Option<Tape>,
}

/// Where the gateway keeps every request and answer of a run, to answer a replay from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tape {
    /// Ask the providers, and store each answered request in the folder.
    Record(PathBuf),
    /// Answer from the folder only, offline; a request not in it fails.
    Replay(PathBuf),
}

impl Default for LlmSettings {
    fn default() -> Self {
        LlmSettings {
            providers: BTreeMap::new(),
            prices: BTreeMap::new(),
            limits: BTreeMap::new(),
            budgets: BTreeMap::new(),
            max_response_bytes: 4 << 20,
            tape: None,
        }
    }
}

/// One OpenAI-compatible endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Where `/chat/completions` is, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The host environment variable that holds the API key; none for a local server
    /// that wants none.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// How long one request may take.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    60_000
}

/// What a provider (or one of its models) may be asked, by all crews together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests in flight at once.
    pub concurrency: Option<usize>,
    pub requests_per_minute: Option<u64>,
    /// Tokens (prompt and completion) the answers of the last minute may have used
    /// before the next request waits.
    pub tokens_per_minute: Option<u64>,
}

/// What one crew (`budget:` in its runtime file) or one stream (`llm.budgets`) may
/// spend through the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub tokens_per_hour: Option<u64>,
    pub usd_per_hour: Option<f64>,
    pub usd_per_day: Option<f64>,
    #[serde(default = "skip")]
    pub on_exceed: OnExceed,
}

fn skip() -> OnExceed {
    OnExceed::Skip
}

/// What happens once a budget is spent: `skip`, `model:<provider>/<model>` or `disable`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum OnExceed {
    /// The crew's calls fail with reason `budget` until the windows leave room.
    Skip,
    /// The crew's requests go to this cheaper `<provider>/<model>` instead.
    Model(String),
    /// The crew stops for the rest of the run; its calls fail with reason `budget`.
    Disable,
}

impl TryFrom<String> for OnExceed {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "skip" => Ok(OnExceed::Skip),
            "disable" => Ok(OnExceed::Disable),
            other => match other.strip_prefix("model:") {
                Some(model) if model.contains('/') => Ok(OnExceed::Model(model.to_owned())),
                _ => Err(format!(
                    "'{other}' is not one of skip, disable, model:<provider>/<model>"
                )),
            },
        }
    }
}

impl From<OnExceed> for String {
    fn from(on_exceed: OnExceed) -> String {
        match on_exceed {
            OnExceed::Skip => "skip".to_owned(),
            OnExceed::Disable => "disable".to_owned(),
            OnExceed::Model(model) => format!("model:{model}"),
        }
    }
}

/// A crew's or a stream's budget and what it spent: per answer, when, tokens and USD.
#[derive(Debug)]
struct Spending {
    budget: Budget,
    spent: VecDeque<(Instant, u64, f64)>,
    /// Set once a `disable` budget was spent.
    disabled: bool,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Spending {
    fn new(budget: &Budget) -> Self {
        Spending {
            budget: budget.clone(),
            spent: VecDeque::new(),
            disabled: false,
        }
    }

    /// Why the budget is spent, if it is.
    fn exceeded(&mut self) -> Option<String> {
        let now = Instant::now();
        while self
            .spent
            .front()
            .is_some_and(|(at, ..)| now.duration_since(*at) >= DAY)
        {
            self.spent.pop_front();
        }
        if self.disabled {
            return Some("its budget was spent earlier in the run (on_exceed: disable)".to_owned());
        }
        let within = |window: Duration| {
            self.spent
                .iter()
                .filter(move |(at, ..)| now.duration_since(*at) < window)
        };
        let tokens: u64 = within(HOUR).map(|(_, tokens, _)| tokens).sum();
        let usd_hour: f64 = within(HOUR).map(|(.., usd)| usd).sum();
        let usd_day: f64 = within(DAY).map(|(.., usd)| usd).sum();
        let budget = &self.budget;
        let why = if budget.tokens_per_hour.is_some_and(|limit| tokens >= limit) {
            format!(
                "{tokens} tokens in the last hour, budget.tokens_per_hour {}",
                budget.tokens_per_hour.unwrap_or(0)
            )
        } else if budget.usd_per_hour.is_some_and(|limit| usd_hour >= limit) {
            format!(
                "${usd_hour:.4} in the last hour, budget.usd_per_hour {}",
                budget.usd_per_hour.unwrap_or(0.0)
            )
        } else if budget.usd_per_day.is_some_and(|limit| usd_day >= limit) {
            format!(
                "${usd_day:.4} in the last day, budget.usd_per_day {}",
                budget.usd_per_day.unwrap_or(0.0)
            )
        } else {
            return None;
        };
        if budget.on_exceed == OnExceed::Disable {
            self.disabled = true;
        }
        Some(why)
    }
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub prompt: f64,
    pub completion: f64,
}

/// What one LLM request of a call used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlmUsage {
    /// `<provider>/<model>`, as the crew asked for it.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From `llm.prices`; 0 for a model without a price.
    pub cost_usd: f64,
    /// From the request to the provider's whole answer.
    pub seconds: f64,
    /// Whether the provider answered with a completion.
    pub ok: bool,
}

/// Where the gateway reports each request: the crew, and what it used.
pub type UsageSink = Arc<dyn Fn(&str, &LlmUsage) + Send + Sync>;

/// The host's client of every configured provider.
pub struct Gateway {
    /// Made on the first request: a host whose crews ask no model never loads TLS roots.
    client: std::sync::OnceLock<reqwest::Client>,
    providers: HashMap<String, Provider>,
    prices: BTreeMap<String, Price>,
    governors: HashMap<String, Governor>,
    max_response_bytes: usize,
    tape: Option<Tape>,
    /// By crew (`crew:<name>`) and by stream (`stream:<id>`).
    budgets: Mutex<HashMap<String, Spending>>,
    /// Where every request is counted, whatever becomes of its call.
    metrics: std::sync::OnceLock<UsageSink>,
}

/// The limits of one provider or model, enforced.
#[derive(Debug)]
struct Governor {
    /// Fair: waiting requests get their turn in the order they came, whichever crew.
    concurrency: Option<Arc<Semaphore>>,
    requests: Option<(u64, Window)>,
    tokens: Option<(u64, Window)>,
}

/// What the last minute used, oldest first: when, and how much.
type Window = Mutex<VecDeque<(Instant, u64)>>;

const MINUTE: Duration = Duration::from_secs(60);

/// How long a 429 without `Retry-After` waits before the request is tried again.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Governor {
    fn new(limits: &Limits) -> Self {
        let window = |limit: Option<u64>| limit.map(|limit| (limit, Mutex::new(VecDeque::new())));
        Governor {
            concurrency: limits
                .concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1)))),
            requests: window(limits.requests_per_minute),
            tokens: window(limits.tokens_per_minute),
        }
    }

    /// Waits until a request may go: under the rates of the last minute, then for a
    /// place among the requests in flight (held by the returned permit).
    async fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if let Some((limit, log)) = &self.tokens {
            wait_for_room(log, *limit, 0).await;
        }
        if let Some((limit, log)) = &self.requests {
            wait_for_room(log, *limit, 1).await;
        }
        match &self.concurrency {
            Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
            None => None,
        }
    }

    /// What an answer used, for the tokens per minute.
    fn used(&self, tokens: u64) {
        if let Some((_, log)) = &self.tokens {
            lock(log).push_back((Instant::now(), tokens));
        }
    }
}

/// Waits until the last minute's entries of `log` leave room for `amount` more under
/// `limit` (for `amount` 0: until they are under it), then records `amount`.
async fn wait_for_room(log: &Window, limit: u64, amount: u64) {
    loop {
        let wait = {
            let mut log = lock(log);
            let now = Instant::now();
            while log
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) >= MINUTE)
            {
                log.pop_front();
            }
            let used: u64 = log.iter().map(|(_, n)| n).sum();
            if used + amount <= limit && (amount > 0 || used < limit) {
                if amount > 0 {
                    log.push_back((now, amount));
                }
                return;
            }
            // Room comes when the oldest entry leaves the window.
            log.front().map_or(Duration::ZERO, |(at, _)| {
                MINUTE.saturating_sub(now.duration_since(*at))
            })
        };
        tokio::time::sleep(wait).await;
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
struct Provider {
    url: String,
    /// The key, or why there is none to send.
    key: Result<Option<String>, String>,
    timeout: Duration,
}

/// Why a request failed: the reason code of `llm_error` and a message for the crew.
struct Refusal {
    reason: &'static str,
    message: String,
    retry_after_ms: Option<u64>,
}

impl Refusal {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            reason,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

impl Gateway {
    /// The gateway for `settings`, with the keys read from `env` now.
    pub fn new(settings: &LlmSettings, env: impl Fn(&str) -> Option<String>) -> Self {
        let providers = settings
            .providers
            .iter()
            .map(|(name, provider)| {
                let key = match &provider.api_key_env {
                    None => Ok(None),
                    Some(variable) => env(variable).filter(|key| !key.is_empty()).map(Some).ok_or_else(|| {
                        format!(
                            "llm.providers.{name}.api_key_env names {variable}, which is not set in the host's environment"
                        )
                    }),
                };
                let url = format!("{}/chat/completions", provider.base_url.trim_end_matches('/'));
                let timeout = Duration::from_millis(provider.timeout_ms);
                (name.clone(), Provider { url, key, timeout })
            })
            .collect();
        Gateway {
            client: std::sync::OnceLock::new(),
            providers,
            prices: settings.prices.clone(),
            governors: settings
                .limits
                .iter()
                .map(|(name, limits)| (name.clone(), Governor::new(limits)))
                .collect(),
            max_response_bytes: settings.max_response_bytes,
            tape: settings.tape.clone(),
            budgets: Mutex::new(
                settings
                    .budgets
                    .iter()
                    .map(|(stream, budget)| (format!("stream:{stream}"), Spending::new(budget)))
                    .collect(),
            ),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// Reports every request to `sink` (the host's metrics) from now on, with the crew
    /// that made it: tokens spent by a call that then failed count too.
    pub fn report_to(&self, sink: UsageSink) {
        let _ = self.metrics.set(sink);
    }

    /// Gives `crew` its budget (none: unlimited); what it spent so far stays counted.
    pub fn set_budget(&self, crew: &str, budget: Option<Budget>) {
        let mut budgets = lock(&self.budgets);
        let scope = format!("crew:{crew}");
        match budget {
            Some(budget) => {
                let spending = budgets
                    .entry(scope)
                    .or_insert_with(|| Spending::new(&budget));
                spending.budget = budget;
            }
            None => {
                budgets.remove(&scope);
            }
        }
    }

    /// Whether `crew`'s budget, or that of `stream`, is spent: what to do, and why.
    pub fn over_budget(&self, crew: &str, stream: Option<&str>) -> Option<(OnExceed, String)> {
        let mut budgets = lock(&self.budgets);
        let scopes = [
            Some(format!("crew:{crew}")),
            stream.map(|s| format!("stream:{s}")),
        ];
        scopes.into_iter().flatten().find_map(|scope| {
            let spending = budgets.get_mut(&scope)?;
            let why = spending.exceeded()?;
            let whose = match scope.split_once(':') {
                Some(("stream", stream)) => format!("stream '{stream}'"),
                _ => format!("crew '{crew}'"),
            };
            Some((
                spending.budget.on_exceed.clone(),
                format!("{whose} spent its LLM budget: {why}"),
            ))
        })
    }

    fn spent(&self, crew: &str, stream: Option<&str>, usage: &LlmUsage) {
        let mut budgets = lock(&self.budgets);
        let scopes = [
            Some(format!("crew:{crew}")),
            stream.map(|s| format!("stream:{s}")),
        ];
        for scope in scopes.into_iter().flatten() {
            if let Some(spending) = budgets.get_mut(&scope) {
                spending.spent.push_back((
                    Instant::now(),
                    usage.prompt_tokens + usage.completion_tokens,
                    usage.cost_usd,
                ));
            }
        }
    }

    /// Completes `request` for `crew` within `deadline`: the line to send back to its
    /// runner, and what it used. Waits for the limits of its provider and model, and
    /// tries again after a 429 while the deadline leaves room for the wait.
    pub async fn complete(
        &self,
        crew: &str,
        request: LlmRequest,
        deadline: Instant,
    ) -> (Vec<u8>, LlmUsage) {
        let (answer, usage) = self.answer(crew, request, deadline).await;
        if let Some(sink) = self.metrics.get() {
            sink(crew, &usage);
        }
        (answer, usage)
    }

    async fn answer(
        &self,
        crew: &str,
        request: LlmRequest,
        deadline: Instant,
    ) -> (Vec<u8>, LlmUsage) {
        let started = Instant::now();
        let id = request.id;
        let mut usage = LlmUsage {
            model: request.model.clone(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            seconds: 0.0,
            ok: false,
        };
        let mut request = request;
        let stream = request
            .call
            .as_deref()
            .and_then(stream_of_call)
            .map(str::to_owned);
        match self.over_budget(crew, stream.as_deref()) {
            Some((OnExceed::Model(cheaper), _)) => request.model = cheaper,
            Some((_, why)) => {
                let refusal = HostMessage::LlmError(LlmError {
                    id,
                    reason: "budget".to_owned(),
                    message: why,
                    retry_after_ms: None,
                });
                usage.seconds = started.elapsed().as_secs_f64();
                return (refusal.encode(), usage);
            }
            None => {}
        }
        usage.model = request.model.clone();
        let key = tape_key(&request);
        if let Some(Tape::Replay(dir)) = &self.tape {
            let answer = match replayed(dir, &key) {
                Ok(body) => {
                    self.account(&body, &mut usage);
                    usage.ok = true;
                    HostMessage::LlmResponse(LlmResponse { id, body })
                }
                Err(message) => HostMessage::LlmError(LlmError {
                    id,
                    reason: "not_recorded".to_owned(),
                    message,
                    retry_after_ms: None,
                }),
            };
            return (answer.encode(), usage);
        }
        let governors: Vec<&Governor> = [
            Some(request.model.as_str()),
            request.model.split_once('/').map(|(provider, _)| provider),
        ]
        .into_iter()
        .flatten()
        .filter_map(|name| self.governors.get(name))
        .collect();
        let outcome = loop {
            let mut permits = Vec::new();
            for governor in &governors {
                permits.push(governor.admit().await);
            }
            let outcome = self.ask(&request).await;
            drop(permits);
            match outcome {
                Err(refusal) if refusal.reason == "rate_limited" => {
                    let wait = refusal
                        .retry_after_ms
                        .map_or(DEFAULT_RETRY_AFTER, Duration::from_millis);
                    if Instant::now() + wait >= deadline {
                        break Err(refusal);
                    }
                    tracing::debug!(crew, model = %usage.model, wait_ms = wait.as_millis() as u64, "429 from the provider; trying again");
                    tokio::time::sleep(wait).await;
                }
                other => break other,
            }
        };
        let answer = match outcome {
            Ok(body) => {
                if let Some(Tape::Record(dir)) = &self.tape {
                    record(dir, &key, &request, &body);
                }
                self.account(&body, &mut usage);
                self.spent(crew, stream.as_deref(), &usage);
                for governor in &governors {
                    governor.used(usage.prompt_tokens + usage.completion_tokens);
                }
                usage.ok = true;
                HostMessage::LlmResponse(LlmResponse { id, body })
            }
            Err(refusal) => {
                tracing::info!(
                    crew, model = %usage.model, reason = refusal.reason, message = %refusal.message,
                    "LLM request failed"
                );
                HostMessage::LlmError(LlmError {
                    id,
                    reason: refusal.reason.to_owned(),
                    message: refusal.message,
                    retry_after_ms: refusal.retry_after_ms,
                })
            }
        };
        usage.seconds = started.elapsed().as_secs_f64();
        (answer.encode(), usage)
    }

    /// The provider's answer to `request`, checked to be a chat completion.
    async fn ask(&self, request: &LlmRequest) -> Result<Value, Refusal> {
        let LlmRequest { model, body, .. } = request;
        let Some((provider_name, model_name)) = model.split_once('/') else {
            return Err(Refusal::new(
                "unknown_provider",
                format!("the model '{model}' names no provider; use '<provider>/<model>'"),
            ));
        };
        let Some(provider) = self.providers.get(provider_name) else {
            let known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            return Err(Refusal::new(
                "unknown_provider",
                format!(
                    "no provider '{provider_name}' in llm.providers (configured: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let key = provider
            .key
            .as_ref()
            .map_err(|why| Refusal::new("no_key", why.clone()))?;
        let Value::Object(mut body) = body.clone() else {
            return Err(Refusal::new(
                "bad_request",
                "the request body is not a JSON object",
            ));
        };
        body.insert("model".to_owned(), Value::String(model_name.to_owned()));
        let mut http = self
            .client
            .get_or_init(reqwest::Client::new)
            .post(&provider.url)
            .timeout(provider.timeout)
            .json(&body);
        if let Some(key) = key {
            http = http.bearer_auth(key);
        }
        let mut response = http.send().await.map_err(|error| {
            Refusal::new(
                "provider",
                format!("cannot reach {provider_name}: {}", describe(&error)),
            )
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after_ms = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|seconds| seconds.trim().parse::<f64>().ok())
                .map(|seconds| (seconds * 1000.0) as u64);
            return Err(Refusal {
                reason: "rate_limited",
                message: format!("{provider_name} answered 429 Too Many Requests"),
                retry_after_ms,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|error| {
            Refusal::new(
                "provider",
                format!("{provider_name}'s answer broke off: {}", describe(&error)),
            )
        })? {
            if bytes.len() + chunk.len() > self.max_response_bytes {
                return Err(Refusal::new(
                    "too_large",
                    format!(
                        "{provider_name}'s answer is over llm.max_response_bytes ({} bytes)",
                        self.max_response_bytes
                    ),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            return Err(Refusal::new(
                "provider",
                format!("{provider_name} answered HTTP {status}: {excerpt}"),
            ));
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|error| {
            Refusal::new(
                "provider",
                format!("{provider_name}'s answer is not JSON: {error}"),
            )
        })?;
        if !answer["choices"].is_array() {
            return Err(Refusal::new(
                "provider",
                format!("{provider_name}'s answer is no chat completion (it has no 'choices')"),
            ));
        }
        Ok(answer)
    }

    /// Tokens and cost from the answer's `usage` and the price table.
    fn account(&self, answer: &Value, usage: &mut LlmUsage) {
        let tokens = |field: &str| answer["usage"][field].as_u64().unwrap_or(0);
        usage.prompt_tokens = tokens("prompt_tokens");
        usage.completion_tokens = tokens("completion_tokens");
        if let Some(price) = self.prices.get(&usage.model) {
            usage.cost_usd = (usage.prompt_tokens as f64 * price.prompt
                + usage.completion_tokens as f64 * price.completion)
                / 1_000_000.0;
        }
    }
}

/// The stream of a `call_id` (`<stream>:<slice>:<crew>`; the stream may hold `:`).
fn stream_of_call(call_id: &str) -> Option<&str> {
    let mut parts = call_id.rsplitn(3, ':');
    let (_crew, _slice) = (parts.next()?, parts.next()?);
    parts.next()
}

/// A request's name on the tape: the SHA-256 of its model and body (serde_json writes
/// object keys sorted, so equal requests hash alike). The call id is left out: a replay
/// must answer the same prompt in the same slice however the run was scheduled.
fn tape_key(request: &LlmRequest) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(request.model.as_bytes());
    hash.update(b"\n");
    hash.update(request.body.to_string().as_bytes());
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Stores an answered request; a run that cannot record says so and goes on.
fn record(dir: &Path, key: &str, request: &LlmRequest, answer: &Value) {
    let entry =
        serde_json::json!({"model": request.model, "request": request.body, "response": answer});
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join(format!("{key}.json")), entry.to_string()));
    if let Err(error) = written {
        tracing::warn!(dir = %dir.display(), %error, "cannot record an LLM answer");
    }
}

/// The recorded answer to the request named `key`, or why there is none.
fn replayed(dir: &Path, key: &str) -> Result<Value, String> {
    let path = dir.join(format!("{key}.json"));
    let text = std::fs::read_to_string(&path).map_err(|_| {
        format!(
            "{} holds no answer to this request (a changed prompt, model or crew asks \
             something the recorded run did not)",
            dir.display()
        )
    })?;
    let entry: Value = serde_json::from_str(&text)
        .map_err(|error| format!("{}: not a recorded answer: {error}", path.display()))?;
    Ok(entry["response"].clone())
}

/// An HTTP client error with its causes, which reqwest keeps in its source chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(prices: &[(&str, Price)]) -> Gateway {
        let mut settings = LlmSettings::default();
        settings.providers.insert(
            "local".into(),
            ProviderSettings {
                base_url: "http://127.0.0.1:9/v1/".into(),
                api_key_env: Some("LOCAL_KEY".into()),
                timeout_ms: 1000,
            },
        );
        settings.prices = prices.iter().map(|(m, p)| ((*m).to_owned(), *p)).collect();
        Gateway::new(&settings, |_| None)
    }

    fn request(model: &str) -> LlmRequest {
        LlmRequest {
            id: 7,
            call: None,
            model: model.into(),
            body: serde_json::json!({"messages": []}),
        }
    }

    async fn refusal(gateway: &Gateway, model: &str) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (line, usage) = gateway.complete("crew", request(model), deadline).await;
        assert!(!usage.ok);
        let answer: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            (answer["type"].as_str(), answer["id"].as_u64()),
            (Some("llm_error"), Some(7))
        );
        (
            answer["reason"].as_str().unwrap().into(),
            answer["message"].as_str().unwrap().into(),
        )
    }

    #[tokio::test]
    async fn unknown_providers_and_missing_keys_are_refused_with_the_reason() {
        let gateway = gateway(&[]);
        let (reason, message) = refusal(&gateway, "elsewhere/gpt").await;
        assert_eq!(reason, "unknown_provider");
        assert!(
            message.contains("'elsewhere'") && message.contains("local"),
            "{message}"
        );
        let (reason, _) = refusal(&gateway, "no-slash").await;
        assert_eq!(reason, "unknown_provider");
        let (reason, message) = refusal(&gateway, "local/gpt").await;
        assert_eq!(reason, "no_key");
        assert!(message.contains("LOCAL_KEY"), "{message}");
    }

    #[tokio::test]
    async fn every_request_is_reported_once_with_its_crew_even_a_refused_one() {
        let gateway = gateway(&[]);
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = reported.clone();
        gateway.report_to(Arc::new(move |crew: &str, usage: &LlmUsage| {
            lock(&sink).push((crew.to_owned(), usage.model.clone(), usage.ok));
        }));
        refusal(&gateway, "elsewhere/gpt").await;
        refusal(&gateway, "local/gpt").await;
        assert_eq!(
            *lock(&reported),
            [
                ("crew".to_owned(), "elsewhere/gpt".to_owned(), false),
                ("crew".to_owned(), "local/gpt".to_owned(), false),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_wait_for_the_oldest_to_leave_the_window() {
        let governor = Governor::new(&Limits {
            requests_per_minute: Some(2),
            ..Limits::default()
        });
        let started = Instant::now();
        governor.admit().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        governor.admit().await;
        assert_eq!(started.elapsed(), Duration::from_secs(10), "two go at once");
        governor.admit().await;
        assert_eq!(
            started.elapsed(),
            MINUTE,
            "the third when the first is a minute old"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_hold_requests_while_the_last_minute_used_them_up() {
        let governor = Governor::new(&Limits {
            tokens_per_minute: Some(1000),
            ..Limits::default()
        });
        let started = Instant::now();
        governor.admit().await;
        governor.used(1200);
        governor.admit().await;
        assert_eq!(started.elapsed(), MINUTE);
    }

    #[test]
    fn usage_is_priced_per_million_tokens() {
        let gateway = gateway(&[(
            "local/gpt",
            Price {
                prompt: 2.0,
                completion: 8.0,
            },
        )]);
        let mut usage = LlmUsage {
            model: "local/gpt".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            seconds: 0.0,
            ok: true,
        };
        let answer =
            serde_json::json!({"usage": {"prompt_tokens": 1000, "completion_tokens": 500}});
        gateway.account(&answer, &mut usage);
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1000, 500));
        assert!((usage.cost_usd - 0.006).abs() < 1e-12, "{}", usage.cost_usd);
    }
}
