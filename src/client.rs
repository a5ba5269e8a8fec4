//! The command-line client: subcommands that talk to a running tds over its REST API
//! (`--url`/`TDS_URL`, `--token`/`TDS_TOKEN`). Human output by default, `--json` for scripts.
//! Plain HTTP only (reqwest is built without TLS): put a TLS-terminating proxy in front of a
//! remote tds. Every text that came from the server is made inert before it reaches the
//! terminal (case C07).
//!
//! Exit codes: 0 success; 1 an error, or `submit --wait` ended `failed`; 2 `submit --wait`
//! ended `cancelled`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use tds_core::sanitize::inert;

use crate::cli::{AnalyticsArgs, ClientArgs, Command, HistoryArgs, LogsArgs, SubmitArgs};

/// How often `submit --wait` asks for the status.
const POLL: Duration = Duration::from_millis(500);

/// An error answer of the API, shown as its message.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP {}, {})", self.message, self.status, self.code)
    }
}

impl std::error::Error for ApiFailure {}

/// A connection to one tds instance.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for `--url` with `--token`.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let mut base = Url::parse(args.url.trim_end_matches('/'))
            .with_context(|| format!("--url '{}' is not a URL (e.g. http://127.0.0.1:7878)", args.url))?;
        anyhow::ensure!(
            base.scheme() == "http",
            "--url must be http:// (this client has no TLS; use a local tunnel or proxy for https)"
        );
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, base, token: args.token.clone().filter(|t| !t.is_empty()) })
    }

    /// The URL of an API path such as `deployments/ID/status`, with query pairs.
    pub fn url(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Url> {
        let mut url = self.base.join(&format!("api/v1/{path}"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, url);
        match &self.token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Sends a request; an error answer becomes an [`ApiFailure`] with the API's message.
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = builder.send().await.map_err(|e| {
            let what = if e.is_connect() { "cannot connect to tds" } else { "request to tds failed" };
            anyhow::anyhow!("{what} at {}: {e}", self.base)
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(failure(response).await.into())
    }

    /// GET a JSON document.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = self.url(path, query)?;
        Ok(self.send(self.request(Method::GET, url)).await?.json().await?)
    }

    async fn call(&self, method: Method, path: &str) -> anyhow::Result<Value> {
        let url = self.url(path, &[])?;
        Ok(self.send(self.request(method, url)).await?.json().await?)
    }
}

async fn failure(response: reqwest::Response) -> ApiFailure {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let envelope: Option<Value> = serde_json::from_str(&text).ok();
    let field = |name: &str| envelope.as_ref().and_then(|v| v["error"][name].as_str()).map(|s| inert(s).into_owned());
    ApiFailure {
        status: status.as_u16(),
        code: field("code").unwrap_or_else(|| "http_error".into()),
        message: field("message").unwrap_or_else(|| {
            let reason = status.canonical_reason().unwrap_or("error");
            if text.is_empty() { reason.to_owned() } else { inert(text.trim()).chars().take(300).collect() }
        }),
    }
}

/// Runs a client subcommand.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    execute(command).await.map(ExitCode::from)
}

/// Runs a client subcommand and returns its exit code (for tests and `run`).
pub async fn execute(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Submit(args) => submit(&args).await,
        Command::Status { id, client } => {
            let c = Client::new(&client)?;
            let d = c.get(&format!("deployments/{}/status", encode(&id)), &[]).await?;
            print_value(&client, &d, describe);
            Ok(0)
        }
        Command::Logs(args) => logs(&args).await,
        Command::Cancel { id, client } => {
            let c = Client::new(&client)?;
            let d = c.call(Method::PUT, &format!("deployments/{}/cancel", encode(&id))).await?;
            print_value(&client, &d, |d| format!("{} is {}\n", text(&d["id"]), text(&d["status"])));
            Ok(0)
        }
        Command::Retry { id, client } => {
            let c = Client::new(&client)?;
            let d = c.call(Method::POST, &format!("deployments/{}/retry", encode(&id))).await?;
            print_value(&client, &d, |d| {
                format!("{} is {} again (attempt {})\n", text(&d["id"]), text(&d["status"]), d["attempt"])
            });
            Ok(0)
        }
        Command::History(args) => history(&args).await,
        Command::Metrics { client } => {
            let c = Client::new(&client)?;
            let m = c.get("deployments/metrics", &[]).await?;
            print_value(&client, &m, describe_metrics);
            Ok(0)
        }
        Command::Analytics(args) => analytics(&args).await,
        Command::CheckConfig { .. } | Command::Token(_) => anyhow::bail!("not a client command"),
    }
}

/// Percent-encodes one path segment.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON string as inert text (`-` for null).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => inert(s).into_owned(),
        other => inert(&other.to_string()).into_owned(),
    }
}

fn print_value(client: &ClientArgs, v: &Value, human: impl Fn(&Value) -> String) {
    if client.json {
        crate::outln(&serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        crate::out(human(v));
    }
}

/// `status (phase k/n step, p%)`.
fn progress(d: &Value) -> String {
    let mut s = text(&d["status"]);
    if d["status"] == "running" {
        let _ = write!(s, " ({}", text(&d["phase"]));
        if d["step"].is_object() {
            let _ = write!(s, " {}/{} {}", d["step"]["index"], d["step"]["total"], text(&d["step"]["name"]));
        }
        let _ = write!(s, ", {}%)", d["progress_percent"]);
    }
    if let Some(w) = d["wait_reason"].as_str() {
        let _ = write!(s, ": {}", inert(w));
    }
    s
}

/// A duration for a person: `850ms`, `12.4s`, `3m05s`.
fn human_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0}ms")
    } else if ms < 60_000.0 {
        format!("{:.1}s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0).round() as u64;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// A deployment for a person.
pub fn describe(d: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}  {} {} ({})",
        text(&d["id"]),
        text(&d["environment"]),
        text(&d["version"]),
        text(&d["priority"])
    );
    let _ = writeln!(out, "  status     {}", progress(d));
    let _ = writeln!(out, "  attempt    {} (retries {}/{})", d["attempt"], d["retry_count"], d["max_retries"]);
    let a = &d["artifact"];
    let sha: String = text(&a["sha256"]).chars().take(12).collect();
    let _ = writeln!(out, "  artifact   {} ({} bytes, sha256 {sha}…)", text(&a["name"]), a["size"]);
    let _ = writeln!(out, "  requested  by {} at {}", text(&d["requested_by"]), text(&d["created_at"]));
    if !d["started_at"].is_null() {
        let _ = writeln!(out, "  started    {}", text(&d["started_at"]));
    }
    if !d["finished_at"].is_null() {
        let duration = d["duration_ms"].as_f64().map(|ms| format!(" after {}", human_ms(ms))).unwrap_or_default();
        let _ = writeln!(out, "  finished   {}{duration}", text(&d["finished_at"]));
    }
    if !d["next_retry_at"].is_null() {
        let _ = writeln!(out, "  next retry {}", text(&d["next_retry_at"]));
    }
    if !d["error"].is_null() {
        let _ = writeln!(out, "  error      {}", text(&d["error"]));
    }
    if let Some(params) = d["params"].as_object().filter(|p| !p.is_empty()) {
        for (k, v) in params {
            let _ = writeln!(out, "  param      {}={}", inert(k), text(v));
        }
    }
    out
}

/// `tds analytics performance|trends`.
async fn analytics(args: &AnalyticsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&args.client)?;
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [("environment", &args.environment), ("from", &args.from), ("to", &args.to)] {
        if let Some(v) = value {
            query.push((key, v));
        }
    }
    if args.view == "trends" {
        query.push(("metric", &args.metric));
        query.push(("period", &args.period));
        let t = c.get("deployments/analytics/trends", &query).await?;
        print_value(&args.client, &t, describe_trend);
    } else {
        let p = c.get("deployments/analytics/performance", &query).await?;
        print_value(&args.client, &p, describe_performance);
    }
    Ok(0)
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn describe_performance(p: &Value) -> String {
    let mut out = String::new();
    let ms = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), human_ms);
    let scope = if p["environment"].is_null() { "all environments".to_owned() } else { text(&p["environment"]) };
    let _ = writeln!(out, "window       {} .. {}  {scope}", text(&p["from"]), text(&p["to"]));
    let _ = writeln!(
        out,
        "deployments  {} submitted, {} finished: {} succeeded, {} failed, {} cancelled",
        p["submitted"], p["finished"], p["succeeded"], p["failed"], p["cancelled"]
    );
    let _ = writeln!(
        out,
        "rates        success {}  failure {}  throughput {:.1}/h",
        percent(&p["success_rate"]),
        percent(&p["failure_rate"]),
        p["throughput_per_hour"].as_f64().unwrap_or(0.0)
    );
    let d = &p["duration"];
    let _ = writeln!(
        out,
        "duration     mean {}  p50 {}  p95 {}   queue wait mean {}",
        ms(&d["mean_ms"]),
        ms(&d["p50_ms"]),
        ms(&d["p95_ms"]),
        ms(&p["queue_wait_mean_ms"])
    );
    for u in p["utilization"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "utilization  {:<16} {:>6}  ({:.0} busy of {:.0} slot-seconds)",
            text(&u["environment"]),
            percent(&u["utilization"]),
            u["busy_slot_seconds"].as_f64().unwrap_or(0.0),
            u["capacity_slot_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let dora = |name: &str, f: &Value| {
        format!(
            "dora         {name:<16} {:.2}/day  change failure {}  restore {}  lead time {}\n",
            f["deployment_frequency_per_day"].as_f64().unwrap_or(0.0),
            percent(&f["change_failure_rate"]),
            ms(&f["time_to_restore_ms"]),
            ms(&f["lead_time_ms"])
        )
    };
    out.push_str(&dora("(all)", &p["dora"]["overall"]));
    for e in p["dora"]["environments"].as_array().into_iter().flatten() {
        out.push_str(&dora(&text(&e["environment"]), e));
    }
    out
}

fn describe_trend(t: &Value) -> String {
    let mut out = String::new();
    let metric = t["metric"].as_str().unwrap_or_default();
    let show = |v: &Value| match (metric, v.as_f64()) {
        (_, None) => "-".to_owned(),
        ("success_rate" | "failure_rate", Some(r)) => format!("{:.1}%", r * 100.0),
        ("duration" | "queue_wait", Some(ms)) => human_ms(ms),
        (_, Some(n)) => format!("{n:.0}"),
    };
    let max = t["buckets"].as_array().into_iter().flatten().filter_map(|b| b["value"].as_f64()).fold(0.0, f64::max);
    let _ = writeln!(out, "{} by {} {}", text(&t["metric"]), text(&t["period"]), text(&t["environment"]));
    for b in t["buckets"].as_array().into_iter().flatten() {
        let bar = b["value"].as_f64().map_or(0, |v| if max > 0.0 { (v / max * 30.0).round() as usize } else { 0 });
        let _ =
            writeln!(out, "{}  {:>8}  n={:<5} {}", text(&b["start"]), show(&b["value"]), b["count"], "█".repeat(bar));
    }
    let s = &t["summary"];
    let _ = writeln!(
        out,
        "min {}  max {}  mean {}  over {} non-empty buckets",
        show(&s["min"]),
        show(&s["max"]),
        show(&s["mean"]),
        s["non_empty_buckets"]
    );
    out
}

fn describe_metrics(m: &Value) -> String {
    let mut out = String::new();
    let rate = m["success_rate"].as_f64().map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let c = &m["counts"];
    let _ = writeln!(out, "deployments  {} total, success rate {rate}", m["total"]);
    let _ = writeln!(
        out,
        "  queued {}  running {}  rolling back {}  retry wait {}  succeeded {}  failed {}  cancelled {}",
        c["queued"], c["running"], c["rolling_back"], c["retry_wait"], c["succeeded"], c["failed"], c["cancelled"]
    );
    let d = &m["duration"];
    let ms = |v: &Value| v.as_f64().map_or_else(|| "-".to_owned(), human_ms);
    let _ = writeln!(
        out,
        "duration     mean {}  p50 {}  p95 {}  (n={})",
        ms(&d["mean_ms"]),
        ms(&d["p50_ms"]),
        ms(&d["p95_ms"]),
        d["count"]
    );
    let _ = writeln!(out, "retries      {}   queue {}   running {}", m["total_retries"], m["queue_size"], m["running"]);
    for e in m["environments"].as_array().into_iter().flatten() {
        let state = if e["paused"] == true {
            "paused"
        } else if e["available"] == true {
            "available"
        } else {
            "unavailable"
        };
        let _ = writeln!(
            out,
            "  {:<16} {}/{} running, {} queued, {state}",
            text(&e["name"]),
            e["running"],
            e["limit"],
            e["queued"]
        );
    }
    out
}

async fn submit(args: &SubmitArgs) -> anyhow::Result<u8> {
    let c = Client::new(&args.client)?;
    let path = &args.artifact;
    let file = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata().await.with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(meta.is_file(), "{} is not a file (an artifact is one archive or file)", path.display());
    let size = meta.len();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?
        .to_owned();
    let mut query: Vec<(String, String)> = vec![
        ("environment".into(), args.environment.clone()),
        ("name".into(), name),
        ("version".into(), args.version.clone()),
        ("priority".into(), args.priority.clone()),
    ];
    for p in &args.params {
        let (k, v) = p.split_once('=').with_context(|| format!("--param '{p}' is not KEY=VALUE"))?;
        query.push((format!("param.{k}"), v.to_owned()));
    }
    let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = c.url("deployments", &pairs)?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let mut request = c
        .request(Method::POST, url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .header(reqwest::header::CONTENT_LENGTH, size)
        .body(body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let answer: Value = c.send(request).await?.json().await?;
    let id = answer["id"].as_str().context("the server's answer has no id")?.to_owned();
    if !args.wait {
        if args.client.json {
            crate::outln(&answer.to_string());
        } else {
            crate::outln(&id);
        }
        return Ok(0);
    }
    eprintln!("submitted {id} to {}", inert(&args.environment));
    let final_state = wait(&c, &id).await?;
    if args.client.json {
        crate::outln(&serde_json::to_string_pretty(&final_state).unwrap_or_default());
    } else {
        crate::out(describe(&final_state));
    }
    Ok(match final_state["status"].as_str() {
        Some("succeeded") => 0,
        Some("cancelled") => 2,
        _ => 1,
    })
}

/// Polls the status until the deployment is terminal, reporting each change on stderr.
pub async fn wait(c: &Client, id: &str) -> anyhow::Result<Value> {
    let path = format!("deployments/{}/status", encode(id));
    let mut last = String::new();
    loop {
        let d = c.get(&path, &[]).await?;
        let line = format!("{} attempt {}", progress(&d), d["attempt"]);
        if line != last {
            eprintln!("{id}: {line}");
            last = line;
        }
        if matches!(d["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return Ok(d);
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn logs(args: &LogsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&args.client)?;
    let format = if args.client.json { "json" } else { args.format.as_str() };
    let attempt = args.attempt.map(|a| a.to_string());
    let mut query = vec![("format", format)];
    if args.follow {
        query.push(("follow", "true"));
    }
    if let Some(a) = &attempt {
        query.push(("attempt", a));
    }
    let url = c.url(&format!("deployments/{}/logs", encode(&args.id)), &query)?;
    let response = c.send(c.request(Method::GET, url)).await?;
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the log stream was interrupted")?;
        crate::out(&chunk);
    }
    Ok(0)
}

async fn history(args: &HistoryArgs) -> anyhow::Result<u8> {
    let c = Client::new(&args.client)?;
    let (limit, offset) = (args.limit.to_string(), args.offset.to_string());
    let mut query = vec![("limit", limit.as_str()), ("offset", offset.as_str())];
    if let Some(e) = &args.environment {
        query.push(("environment", e));
    }
    if let Some(s) = &args.status {
        query.push(("status", s));
    }
    let page = c.get("deployments/history", &query).await?;
    print_value(&args.client, &page, describe_page);
    Ok(0)
}

fn describe_page(page: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26}  {:<12} {:<12} {:<8} {:<12} {:<20} {:>9}",
        "ID", "ENVIRONMENT", "VERSION", "PRIORITY", "STATUS", "CREATED", "DURATION"
    );
    let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
    for d in items {
        let duration = d["duration_ms"].as_f64().map_or_else(|| "-".to_owned(), human_ms);
        let created: String = text(&d["created_at"]).chars().take(19).collect();
        let version: String = text(&d["version"]).chars().take(12).collect();
        let _ = writeln!(
            out,
            "{:<26}  {:<12} {:<12} {:<8} {:<12} {:<20} {:>9}",
            text(&d["id"]),
            text(&d["environment"]),
            version,
            text(&d["priority"]),
            text(&d["status"]),
            created,
            duration
        );
    }
    let offset = page["offset"].as_u64().unwrap_or(0);
    let total = page["total"].as_u64().unwrap_or(0);
    if items.is_empty() {
        let _ = writeln!(out, "(no deployments on this page; {total} in total)");
    } else {
        let _ = writeln!(out, "{}–{} of {total}", offset + 1, offset + items.len() as u64);
    }
    out
}

/// Whether an error is an API answer with this status (for callers that branch on it).
pub fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<ApiFailure>().is_some_and(|f| f.status == status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_is_made_inert_and_durations_read_well() {
        let d = serde_json::json!({
            "id": "01JF0000000000000000000000", "environment": "staging", "version": "v\u{1b}[2J",
            "priority": "high", "status": "running", "phase": "steps",
            "step": {"index": 2, "total": 3, "name": "install"}, "progress_percent": 43,
            "attempt": 1, "retry_count": 0, "max_retries": 3,
            "artifact": {"name": "site.tar.gz", "size": 10, "sha256": "abcdef0123456789"},
            "params": {}, "requested_by": "ci", "wait_reason": null, "error": null,
            "next_retry_at": null, "created_at": "2026-12-03T10:00:00Z", "started_at": null,
            "finished_at": null, "duration_ms": null
        });
        let text = describe(&d);
        assert!(text.contains("v␛[2J") && !text.contains('\u{1b}'), "{text}");
        assert!(text.contains("running (steps 2/3 install, 43%)"), "{text}");
        assert_eq!(
            (human_ms(850.0), human_ms(12_400.0), human_ms(185_000.0)),
            ("850ms".into(), "12.4s".into(), "3m05s".into())
        );
        assert_eq!(encode("a b/../c"), "a%20b%2F..%2Fc");
    }
}
