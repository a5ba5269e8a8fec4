//! The REST API over a real socket and with `oneshot`: every endpoint and error path, the field
//! cases C07 (text log policy), C13, C14, C16 and C17, the auth matrix, and the CLI client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{Value, json};
use tds::api;
use tds::cli::{ClientArgs, Command, LogsArgs, SubmitArgs};
use tower::ServiceExt as _;

use crate::common::{Harness, site, wait_for};

/// Three environments: one that works, one that sleeps (to cancel), one that always fails.
const ENVS: &str = r#"
[[environments]]
name = "staging"
root = "{dir}/envs/staging"
steps = [{ name = "install", run = "echo \"installing $TDS_VERSION\"; cat VERSION; echo" }]
verify = [{ name = "smoke", run = "test -f index.html" }]

[[environments]]
name = "slow"
root = "{dir}/envs/slow"
max_concurrent = 1
steps = [{ name = "wait", run = "sleep 30" }]

[[environments]]
name = "broken"
root = "{dir}/envs/broken"
retry = { max_retries = 0 }
steps = [{ name = "fail", run = "echo boom >&2; exit 1" }]
"#;

const TIMEOUT: Duration = Duration::from_secs(20);

async fn harness() -> (Harness, Router) {
    harness_with("").await
}

/// A harness whose config gets `defaults` lines (before the environments) and `extra` tables.
async fn harness_with(defaults: &str) -> (Harness, Router) {
    let h = Harness::start(&format!("{defaults}\n{ENVS}")).await;
    let app = api::router(h.handle.clone());
    (h, app)
}

fn request(method: Method, uri: &str, token: Option<&str>, body: Option<&Value>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(v) => b.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())),
        None => b.body(Body::empty()),
    }
    .expect("request")
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    (status, headers, body)
}

/// Sends and parses a JSON answer (`Null` for a non-JSON body).
async fn call(app: &Router, method: Method, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
    call_as(app, method, uri, None, body).await
}

async fn call_as(
    app: &Router,
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let (status, _, bytes) = send(app, request(method, uri, token, body)).await;
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn raw(
    app: &Router,
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: Body,
) -> (StatusCode, HeaderMap, Value) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    let (status, headers, bytes) = send(app, b.body(body).expect("request")).await;
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn submission(env: &str, version: &str, bytes: &[u8]) -> Value {
    json!({"environment": env, "artifact": {"name": "site.tar.gz", "content_base64": b64(bytes)}, "version": version})
}

/// Every error answer has exactly the envelope's shape.
fn assert_envelope(body: &Value, code: &str) {
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["details"].is_object(), "{body}");
    assert_eq!(body.as_object().map(serde_json::Map::len), Some(1), "{body}");
}

async fn submit_ok(app: &Router, body: &Value) -> String {
    let (status, answer) = call(app, Method::POST, "/api/v1/deployments", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer["id"].as_str().expect("id").to_owned()
}

async fn wait_status(app: &Router, id: &str, wanted: &str) -> Value {
    wait_until(app, id, wanted, |d| d["status"] == wanted).await
}

/// Polls the status route until `check` holds.
async fn wait_until(app: &Router, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let uri = format!("/api/v1/deployments/{id}/status");
    wait_for(TIMEOUT, &format!("{id}: {what}"), || {
        let (app, uri) = (app.clone(), uri.clone());
        let d = async move { call(&app, Method::GET, &uri, None).await.1 };
        let check = &check;
        async move {
            let d = d.await;
            check(&d).then_some(d)
        }
    })
    .await
}

async fn text_of(app: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    let (status, headers, bytes) = send(app, request(Method::GET, uri, None, None)).await;
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn submit_json_then_status_logs_and_detail() {
    let (_h, app) = harness().await;
    let (status, headers, answer) = raw(
        &app,
        Method::POST,
        "/api/v1/deployments",
        Some("application/json"),
        Body::from(submission("staging", "1.0", &site("v1")).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["id"].as_str().expect("id").to_owned();
    assert_eq!(answer["status"], "queued");
    assert_eq!(answer["status_url"], format!("/api/v1/deployments/{id}/status"));
    assert_eq!(headers[header::LOCATION], format!("/api/v1/deployments/{id}/status").as_str());

    let d = wait_status(&app, &id, "succeeded").await;
    for field in [
        "id",
        "environment",
        "version",
        "priority",
        "status",
        "phase",
        "step",
        "progress_percent",
        "attempt",
        "retry_count",
        "max_retries",
        "artifact",
        "params",
        "requested_by",
        "wait_reason",
        "error",
        "next_retry_at",
        "created_at",
        "started_at",
        "finished_at",
        "duration_ms",
    ] {
        assert!(d.get(field).is_some(), "status lacks {field}: {d}");
    }
    assert_eq!(d["progress_percent"], 100);
    assert_eq!(d["requested_by"], "anonymous");
    assert!(d["finished_at"].is_string() && d["duration_ms"].is_u64());

    let (status, headers, text) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?format=text")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ct").starts_with("text/plain"));
    assert!(text.contains("installing 1.0") && text.contains("stdout install | v1"), "{text}");

    let (_, headers, jsonl) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?download=true")).await;
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    let disposition = headers[header::CONTENT_DISPOSITION].to_str().expect("disposition");
    assert!(disposition.starts_with("attachment; filename=") && disposition.contains(".jsonl"), "{disposition}");
    let records: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(records.iter().any(|r| r["event"] == "output" && r["message"] == "installing 1.0"));
    assert!(records.windows(2).all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()));

    let (status, _, text) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?attempt=1&format=TEXT")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("succeeded"));
    let (status, body) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}/logs?attempt=2"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "not_found");
    for bad in ["attempt=0", "attempt=x", "format=xml", "follow=maybe", "lines=3"] {
        let (status, body) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}/logs?{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let (status, detail) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["deployment"]["id"], id.as_str());
    assert_eq!(detail["attempts"][0]["outcome"], "succeeded");
    assert!(detail["transitions"].as_array().is_some_and(|t| t.len() >= 2));

    // A finished deployment's log can also be followed: it ends at once with the status record.
    let (_, _, followed) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?follow=true")).await;
    let last: Value = serde_json::from_str(followed.lines().last().expect("a line")).expect("json");
    assert_eq!((last["event"].as_str(), last["message"].as_str()), (Some("status"), Some("deployment succeeded")));
}

#[tokio::test]
async fn raw_upload_is_streamed_with_query_fields() {
    let (h, app) = harness().await;
    let uri =
        "/api/v1/deployments?environment=staging&name=site.tar.gz&version=raw-1&priority=Critical&param.TICKET=42";
    let (status, _, answer) =
        raw(&app, Method::POST, uri, Some("application/octet-stream"), Body::from(site("r"))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let d = wait_status(&app, answer["id"].as_str().expect("id"), "succeeded").await;
    assert_eq!((d["priority"].as_str(), d["version"].as_str()), (Some("critical"), Some("raw-1")));
    assert_eq!(d["params"]["TICKET"], "42");
    assert_eq!(std::fs::read_to_string(h.root("staging").join("current/VERSION")).expect("VERSION"), "r");

    for (query, code) in [
        ("name=a.tar.gz", "invalid_parameter"),
        ("environment=staging", "invalid_parameter"),
        ("environment=staging&name=a.tgz&colour=red", "unknown_parameter"),
        ("environment=staging&name=a.tgz&priority=urgent", "invalid_parameter"),
        ("environment=staging&name=a.tgz&version=1&version=2", "invalid_parameter"),
        ("environment=nope&name=a.tgz", "unknown_environment"),
        ("environment=staging&name=../x", "invalid_artifact"),
    ] {
        let uri = format!("/api/v1/deployments?{query}");
        let (status, _, body) =
            raw(&app, Method::POST, &uri, Some("application/octet-stream"), Body::from(site("x"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_envelope(&body, code);
    }
    let (status, _, body) = raw(
        &app,
        Method::POST,
        "/api/v1/deployments?environment=staging&name=empty.bin",
        Some("application/octet-stream"),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "invalid_artifact");
}

/// C13: enum case, typos, wrong types, trailing spaces, unknown nested fields, wrong content
/// type and empty bodies: one policy, one envelope, the same codes on every endpoint.
#[tokio::test]
async fn c13_api_contract() {
    let (_h, app) = harness().await;
    for priority in ["High", "HIGH", "high"] {
        let mut body = submission("staging", "1", &site("c13"));
        body["priority"] = json!(priority);
        let id = submit_ok(&app, &body).await;
        let (_, d) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}/status"), None).await;
        assert_eq!(d["priority"], "high", "{priority}");
    }
    let art = json!({"name": "a.tar.gz", "content_base64": b64(&site("x"))});
    let cases = [
        (json!({"environment": "staging", "artifact": art, "priorty": "high"}), "unknown_field", "priorty"),
        (json!({"environment": "staging", "artifact": art, "version": 1.5}), "invalid_field", "version"),
        (json!({"environment": "staging", "artifact": art, "priority": "urgent"}), "invalid_field", "priority"),
        (json!({"environment": "staging", "artifact": art, "params": {"A": 1}}), "invalid_field", "params.A"),
        (
            json!({"environment": "staging", "artifact": {"name": "a.tar.gz", "content_base64": "aGk=", "mode": 1}}),
            "unknown_field",
            "artifact.mode",
        ),
        (json!({"environment": "staging"}), "missing_field", "artifact"),
        (
            json!({"environment": "staging", "artifact": {"name": "a.tar.gz"}}),
            "missing_field",
            "artifact.content_base64",
        ),
        (
            json!({"environment": "staging", "artifact": art, "params": {"bad key": "x"}}),
            "invalid_field",
            "params.bad key",
        ),
        (json!({"environment": 7, "artifact": art}), "invalid_field", "environment"),
    ];
    for (body, code, field) in cases {
        let (status, answer) = call(&app, Method::POST, "/api/v1/deployments", Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_envelope(&answer, code);
        assert_eq!(answer["error"]["details"]["field"], field, "{answer}");
        assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{answer}");
    }
    let (status, answer) =
        call(&app, Method::POST, "/api/v1/deployments", Some(&json!({"environment": "staging ", "artifact": art})))
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&answer, "unknown_environment");
    assert!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("'staging '")), "{answer}");
    let (status, answer) = call(
        &app,
        Method::POST,
        "/api/v1/deployments",
        Some(&json!({"environment": "staging", "artifact": {"name": "a.tar.gz", "content_base64": "not base64!"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&answer, "invalid_base64");

    // The same rules on another JSON endpoint.
    let id = submit_ok(&app, &submission("slow", "p", &site("p"))).await;
    let uri = format!("/api/v1/deployments/{id}/priority");
    for (content_type, body, status, code) in [
        (Some("text/plain"), "{\"priority\":\"high\"}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (None, "{\"priority\":\"high\"}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (Some("application/json"), "", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json"), "{\"priority\":", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json"), "{\"priority\":\"high\"} x", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json"), "{\"priorty\":\"high\"}", StatusCode::BAD_REQUEST, "unknown_field"),
        (Some("application/json"), "{}", StatusCode::BAD_REQUEST, "missing_field"),
        (Some("application/json"), "{\"priority\":\"high\",\"x\":1}", StatusCode::BAD_REQUEST, "unknown_field"),
        (Some("application/json"), "{\"priority\":2}", StatusCode::BAD_REQUEST, "invalid_field"),
        // serde fills a struct from an array of its fields; no client means that.
        (Some("application/json"), "[\"high\"]", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json"), "null", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            Some("application/json"),
            "{\"priority\":\"high\",\"priority\":\"low\"}",
            StatusCode::BAD_REQUEST,
            "duplicate_field",
        ),
        (Some("application/json"), "{\"priority\":\"CRITICAL\"}", StatusCode::OK, ""),
    ] {
        let (got, _, answer) = raw(&app, Method::PUT, &uri, content_type, Body::from(body)).await;
        assert_eq!(got, status, "{body}: {answer}");
        if status == StatusCode::OK {
            assert_eq!(answer["priority"], "critical");
        } else {
            assert_envelope(&answer, code);
        }
    }
    // The change is in the log as what it is, not as a `queued` record.
    let (_, _, jsonl) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?format=json")).await;
    assert!(
        jsonl.lines().any(|l| l.contains("\"event\":\"priority_changed\"") && l.contains("normal → critical")),
        "{jsonl}"
    );
    for (content_type, body, status, code) in [
        (Some("text/plain"), "x", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (None, "x", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (Some("application/json"), "", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json; charset=utf-8"), "[]", StatusCode::BAD_REQUEST, "invalid_json"),
        (Some("application/json"), " \"str\"", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            Some("application/json"),
            "{\"environment\":\"staging\",\"artifact\":[]}",
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
    ] {
        let (got, _, answer) = raw(&app, Method::POST, "/api/v1/deployments", content_type, Body::from(body)).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_envelope(&answer, code);
        // The message speaks JSON, not the server's Rust types.
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.contains("struct"), "{body}: {message}");
    }
    let (_, _, answer) = raw(
        &app,
        Method::PUT,
        &uri,
        Some("application/json"),
        Body::from("{\"priority\":\"high\",\"priority\":\"low\"}"),
    )
    .await;
    assert_eq!(answer["error"]["details"]["field"], "priority", "{answer}");
}

/// Every route refuses query parameters it does not take, naming the first, as the routes with
/// parameters refuse unknown ones: a `?environment=` on a JSON submission is not ignored.
#[tokio::test]
async fn query_parameters_a_route_does_not_take_are_refused() {
    let (_h, app) = harness().await;
    let id = submit_ok(&app, &submission("staging", "1", &site("q"))).await;
    for (method, uri) in [
        (Method::GET, "/api/v1/deployments/metrics?x=1".to_owned()),
        (Method::GET, "/api/v1/metrics?x=1".to_owned()),
        (Method::GET, "/api/v1/environments?x=1".to_owned()),
        (Method::PUT, "/api/v1/environments/staging/resume?x=1".to_owned()),
        (Method::GET, format!("/api/v1/deployments/{id}/status?x=1")),
        (Method::POST, format!("/api/v1/deployments/{id}/retry?x=1")),
    ] {
        let (status, body) = call(&app, method, &uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_envelope(&body, "unknown_parameter");
        assert_eq!(body["error"]["details"]["parameter"], "x", "{uri}: {body}");
    }
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/deployments?environment=staging",
        Some(&submission("staging", "2", &site("q"))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["details"]["parameter"], "environment", "{body}");
    // Without parameters (an empty query too) the same routes answer.
    for uri in ["/api/v1/deployments/metrics", "/api/v1/deployments/metrics?", "/api/v1/environments"] {
        let (status, body) = call(&app, Method::GET, uri, None).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
}

/// C14: paging and filter edges never give a 500, bad numbers give a 400 naming the parameter,
/// past the end is an empty page with the right total, the limit is capped, the order is stable.
#[tokio::test]
async fn c14_paging_edges() {
    let (_h, app) = harness().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(submit_ok(&app, &submission("staging", &format!("{i}"), &site("h"))).await);
    }
    let page = |q: &'static str| {
        let app = app.clone();
        async move { call(&app, Method::GET, &format!("/api/v1/deployments/history?{q}"), None).await }
    };
    for q in ["offset=1000", "offset=3"] {
        let (status, p) = page(q).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((p["items"].as_array().map(Vec::len), p["total"].as_u64()), (Some(0), Some(3)), "{q}: {p}");
    }
    let (_, p) = page("limit=0").await;
    assert_eq!(
        (p["items"].as_array().map(Vec::len), p["total"].as_u64(), p["limit"].as_u64()),
        (Some(0), Some(3), Some(0))
    );
    let (_, p) = page("limit=1000000").await;
    assert_eq!(p["limit"], 500, "{p}");
    assert_eq!(p["items"].as_array().map(Vec::len), Some(3));
    let (_, p) = page("").await;
    assert_eq!((p["limit"].as_u64(), p["offset"].as_u64()), (Some(50), Some(0)));
    let listed: Vec<&str> = p["items"].as_array().expect("items").iter().filter_map(|d| d["id"].as_str()).collect();
    let mut newest_first: Vec<&str> = ids.iter().map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    for (q, name) in [
        ("limit=-1", "limit"),
        ("offset=-10", "offset"),
        ("offset=abc", "offset"),
        ("offset=18446744073709551616", "offset"),
        ("limit=1.5", "limit"),
        ("status=bogus", "status"),
        ("from=yesterday", "from"),
        ("from=2026-12-03T10:00:00Z&to=2026-12-02T10:00:00Z", "from"),
    ] {
        let (status, body) = page(q).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_envelope(&body, "invalid_parameter");
        assert_eq!(body["error"]["details"]["parameter"], name, "{q}: {body}");
    }
    let (status, body) = page("environment=nonexistent").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "unknown_environment");
    let (status, body) = page("stauts=failed").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "unknown_parameter");
    assert_eq!(body["error"]["details"]["parameter"], "stauts");
    let (status, p) = page("status=RUNNING,Queued,succeeded").await;
    assert_eq!(status, StatusCode::OK, "{p}");
    let (_, p) = page("environment=staging&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00%2B02:00").await;
    assert_eq!(p["total"], 3, "{p}");
    // An empty filter is no filter, for the environment as for the status.
    for q in ["environment=", "status=", "environment=&status="] {
        let (status, p) = page(q).await;
        assert_eq!((status, p["total"].as_u64()), (StatusCode::OK, Some(3)), "{q}: {p}");
    }

    // Paging one at a time while new deployments arrive: new ones come first, so a client that
    // shifts its offset by the number added sees exactly the older ones, in order, with no
    // repeat and no gap (the order is stable: newest first, then id).
    let (_, first) = page("limit=1").await;
    let mut seen = vec![first["items"][0]["id"].as_str().expect("id").to_owned()];
    for offset in 1..3 {
        submit_ok(&app, &submission("staging", "new", &site("n"))).await;
        let (_, p) =
            call(&app, Method::GET, &format!("/api/v1/deployments/history?limit=1&offset={}", 2 * offset), None).await;
        seen.push(p["items"][0]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(seen, newest_first, "paging while adding repeated or skipped");
}

/// C16: the size limit is decided before decoding, for exact, over, declared-huge and chunked
/// bodies, JSON and raw; the server stops reading at the limit; metrics answer meanwhile.
#[tokio::test]
async fn c16_size_limit_before_decoding() {
    let (_h, app) = harness_with("max_artifact_size = \"4KiB\"").await;
    let exact = vec![b'a'; 4096];
    let over = vec![b'a'; 4097];
    let json_of = |bytes: &[u8]| json!({"environment": "staging", "artifact": {"name": "blob.bin", "content_base64": b64(bytes)}});
    let (status, body) = call(&app, Method::POST, "/api/v1/deployments", Some(&json_of(&exact))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = call(&app, Method::POST, "/api/v1/deployments", Some(&json_of(&over))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_envelope(&body, "payload_too_large");
    assert_eq!(body["error"]["details"]["limit"], 4096);
    let raw_uri = "/api/v1/deployments?environment=staging&name=blob.bin";
    let (status, _, body) =
        raw(&app, Method::POST, raw_uri, Some("application/octet-stream"), Body::from(exact.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) =
        raw(&app, Method::POST, raw_uri, Some("application/octet-stream"), Body::from(over.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_envelope(&body, "payload_too_large");

    // A declared 200 MB body is refused from its Content-Length, before a byte is read.
    for (uri, ct) in [("/api/v1/deployments", "application/json"), (raw_uri, "application/octet-stream")] {
        let pulled = Arc::new(AtomicU64::new(0));
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, "200000000")
            .body(counting_body(Arc::clone(&pulled), 200_000_000))
            .expect("request");
        let (status, _, bytes) = send(&app, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{ct}");
        assert_envelope(&serde_json::from_slice(&bytes).expect("json"), "payload_too_large");
        assert_eq!(pulled.load(Ordering::SeqCst), 0, "{ct}: read before refusing");
    }
    // 2 GB chunked, no Content-Length: refused once past the limit, after reading about that much.
    for (uri, ct) in [("/api/v1/deployments", "application/json"), (raw_uri, "application/octet-stream")] {
        let pulled = Arc::new(AtomicU64::new(0));
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(header::CONTENT_TYPE, ct)
            .body(counting_body(Arc::clone(&pulled), 2_000_000_000))
            .expect("request");
        let (status, _, bytes) = send(&app, req).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{ct}");
        assert_envelope(&serde_json::from_slice(&bytes).expect("json"), "payload_too_large");
        let read = pulled.load(Ordering::SeqCst);
        assert!(read < 4 * 1024 * 1024, "{ct}: read {read} bytes of an oversized body");
    }
    // A base64 text that decodes past the limit is refused from its length, before decoding.
    let mut body = json_of(&over);
    body["artifact"]["content_base64"] = json!("A".repeat(5464) + "!!!!");
    let (status, answer) = call(&app, Method::POST, "/api/v1/deployments", Some(&body)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "decoded (and found invalid) instead: {answer}");

    // Uploads stuck mid-body do not stop the metrics endpoint from answering.
    let mut stuck = Vec::new();
    for _ in 0..20 {
        let (tx, rx) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let req = Request::builder()
            .method(Method::POST)
            .uri(raw_uri)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(rx))
            .expect("request");
        let app = app.clone();
        stuck.push((tx, tokio::spawn(async move { app.oneshot(req).await })));
    }
    let (status, m) =
        tokio::time::timeout(Duration::from_secs(5), call(&app, Method::GET, "/api/v1/deployments/metrics", None))
            .await
            .expect("metrics answered while uploads hang");
    assert_eq!(status, StatusCode::OK, "{m}");
    for (tx, task) in stuck {
        drop(tx);
        let _ = task.await;
    }
}

/// A body of `total` bytes made lazily in 64 KiB chunks, counting what the server pulled.
fn counting_body(pulled: Arc<AtomicU64>, total: u64) -> Body {
    let chunk = Bytes::from(vec![b'A'; 64 * 1024]);
    let stream = futures::stream::unfold(0u64, move |sent| {
        let (chunk, pulled) = (chunk.clone(), Arc::clone(&pulled));
        async move {
            (sent < total).then(|| {
                pulled.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                (Ok::<_, std::io::Error>(chunk.clone()), sent + chunk.len() as u64)
            })
        }
    });
    Body::from_stream(stream)
}

/// C17: request values reach steps only as environment variables, never spliced into a command;
/// an environment name that looks like a path is a 4xx and never becomes a path.
#[tokio::test]
async fn c17_parameters_never_reach_a_shell() {
    let h = Harness::start(
        r#"
[[environments]]
name = "inject"
root = "{dir}/envs/inject"
steps = [{ name = "show", run = "echo \"v=$TDS_VERSION\"; printf '%s\n' \"$TDS_PARAM_NOTE\"" }]
"#,
    )
    .await;
    let app = api::router(h.handle.clone());
    let dir = h.dir.path().display().to_string();
    let versions = [
        format!("1.0; touch {dir}/pwned"),
        format!("$(touch {dir}/pwned2)"),
        format!("`touch {dir}/pwned4`"),
        format!("1.0\nrm -rf {dir}/envs"),
        format!("--checkpoint-action=exec=touch {dir}/pwned3"),
    ];
    let mut ids = Vec::new();
    for v in &versions {
        let mut body = submission("inject", v, &site("c17"));
        body["params"] = json!({"NOTE": format!("$(touch {dir}/pwned5); {v}")});
        ids.push(submit_ok(&app, &body).await);
    }
    for (id, v) in ids.iter().zip(&versions) {
        let d = wait_status(&app, id, "succeeded").await;
        assert_eq!(d["version"], v.as_str());
        let (_, _, log) = text_of(&app, &format!("/api/v1/deployments/{id}/logs")).await;
        let out: Vec<String> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"] == "output")
            .filter_map(|r| r["message"].as_str().map(str::to_owned))
            .collect();
        let first_line = v.lines().next().unwrap_or_default();
        assert!(out.contains(&format!("v={first_line}")), "{out:?}");
    }
    for f in ["pwned", "pwned2", "pwned3", "pwned4", "pwned5"] {
        assert!(!h.dir.path().join(f).exists(), "{f} was created: a value reached a shell");
    }
    assert!(h.dir.path().join("envs/inject").exists());
    let (status, body) =
        call(&app, Method::POST, "/api/v1/deployments", Some(&submission("../../prod", "1", &site("x")))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "unknown_environment");
    let (status, _) = call(&app, Method::PUT, "/api/v1/environments/..%2F..%2Fprod/pause", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!h.dir.path().join("prod").exists() && !h.dir.path().parent().expect("parent").join("prod").exists());
    let uri = "/api/v1/deployments?environment=inject&name=a.tar.gz&param.X%3Brm=1";
    let (status, _, body) = raw(&app, Method::POST, uri, Some("application/octet-stream"), Body::from(site("x"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_envelope(&body, "invalid_field");
}

/// C07: the text log shows escape sequences inert (one policy with the dashboard); the JSON log
/// keeps the original characters, escaped by JSON.
#[tokio::test]
async fn c07_text_log_is_inert_and_json_keeps_bytes() {
    let h = Harness::start(
        r#"
[[environments]]
name = "esc"
root = "{dir}/envs/esc"
steps = [{ name = "print", run = "printf '\\033]0;PWNED\\007\\033[2J\\033[31mred\\033[0m [YELLOW] x\\n\\033[?1049l\\033]52;c;cHduZWQ=\\007\\rOVER\\n\\302\\23331mC1\\n'" }]
"#,
    )
    .await;
    let app = api::router(h.handle.clone());
    let id = submit_ok(&app, &submission("esc", "v\u{1b}[2J", &site("e"))).await;
    wait_status(&app, &id, "succeeded").await;
    let (_, _, text) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?format=text")).await;
    assert!(!text.chars().any(|c| c != '\n' && tds_core::sanitize::is_dangerous(c)), "{text:?}");
    assert!(text.contains("␛]0;PWNED␇") && text.contains("[YELLOW] x") && text.contains("⟨9B⟩31mC1"), "{text}");
    assert!(text.contains("v␛[2J"), "the version label is inert too: {text}");
    let (_, _, jsonl) = text_of(&app, &format!("/api/v1/deployments/{id}/logs?format=json")).await;
    assert!(jsonl.contains("\\u001b]0;PWNED\\u0007"), "{jsonl}");
    assert!(!jsonl.contains('\u{1b}'));
}

#[tokio::test]
async fn cancel_retry_priority_rollback_and_their_conflicts() {
    let (_h, app) = harness().await;
    let running = submit_ok(&app, &submission("slow", "a", &site("a"))).await;
    let queued = submit_ok(&app, &submission("slow", "b", &site("b"))).await;
    wait_status(&app, &running, "running").await;
    wait_until(&app, &queued, "waits for capacity", |d| {
        d["status"] == "queued" && d["wait_reason"].as_str().is_some_and(|w| w.contains("capacity"))
    })
    .await;
    let (status, d) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/deployments/{queued}/priority"),
        Some(&json!({"priority": "critical"})),
    )
    .await;
    assert_eq!((status, d["priority"].as_str()), (StatusCode::OK, Some("critical")));

    let (status, d) = call(&app, Method::PUT, &format!("/api/v1/deployments/{running}/cancel"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["status"], "cancelled");
    assert!(d["finished_at"].is_string());
    let (status, body) = call(&app, Method::PUT, &format!("/api/v1/deployments/{running}/cancel"), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_envelope(&body, "invalid_state");
    assert_eq!(body["error"]["details"]["status"], "cancelled");
    let (status, body) =
        call(&app, Method::PUT, &format!("/api/v1/deployments/{running}/priority"), Some(&json!({"priority": "low"})))
            .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = call(&app, Method::POST, &format!("/api/v1/deployments/{running}/rollback"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_envelope(&body, "invalid_state");

    let (status, d) = call(&app, Method::POST, &format!("/api/v1/deployments/{running}/retry"), None).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!((d["status"].as_str(), d["attempt"].as_u64()), (Some("queued"), Some(2)));
    let (status, body) = call(&app, Method::POST, &format!("/api/v1/deployments/{running}/retry"), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    for id in [&running, &queued] {
        let _ = call(&app, Method::PUT, &format!("/api/v1/deployments/{id}/cancel"), None).await;
    }

    let missing = "01JF0000000000000000000000";
    for (method, path) in [
        (Method::GET, "status"),
        (Method::GET, "logs"),
        (Method::PUT, "cancel"),
        (Method::POST, "retry"),
        (Method::POST, "rollback"),
    ] {
        let (status, body) = call(&app, method.clone(), &format!("/api/v1/deployments/{missing}/{path}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_envelope(&body, "not_found");
        let (status, body) = call(&app, method, &format!("/api/v1/deployments/not-an-id/{path}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["details"]["parameter"], "id");
    }
    // An id beyond the 128 bits of a ULID is not an alias of a real one (the parser dropped the
    // high bits: `8…` read as `0…` cancelled someone else's deployment); any case still works.
    let alias = format!("8{}", &running[1..]);
    let (status, body) = call(&app, Method::GET, &format!("/api/v1/deployments/{alias}/status"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{alias}: {body}");
    assert_eq!(body["error"]["details"]["parameter"], "id");
    let (status, body) =
        call(&app, Method::GET, &format!("/api/v1/deployments/{}/status", running.to_lowercase()), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], running.as_str());

    // Manual rollback of the second of two successes goes back to the first.
    let v1 = submit_ok(&app, &submission("staging", "1", &site("1"))).await;
    wait_status(&app, &v1, "succeeded").await;
    let v2 = submit_ok(&app, &submission("staging", "2", &site("2"))).await;
    wait_status(&app, &v2, "succeeded").await;
    let (status, r) = call(&app, Method::POST, &format!("/api/v1/deployments/{v2}/rollback"), None).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["action"], "switched");
    assert!(r["current_release"].as_str().is_some_and(|n| n.starts_with(&v1)), "{r}");
    // The rollback is on the deployment's timeline, not only in its log.
    let (_, detail) = call(&app, Method::GET, &format!("/api/v1/deployments/{v2}"), None).await;
    let last = detail["transitions"].as_array().and_then(|t| t.last()).cloned().unwrap_or_default();
    assert_eq!(last["status"], "succeeded", "{detail}");
    assert!(last["message"].as_str().is_some_and(|m| m.starts_with("manual rollback")), "{detail}");
}

#[tokio::test]
async fn environments_list_pause_resume_limit() {
    let (_h, app) = harness().await;
    let (status, envs) = call(&app, Method::GET, "/api/v1/environments", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = envs.as_array().expect("list").iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(names, ["staging", "slow", "broken"]);
    let (status, e) = call(&app, Method::GET, "/api/v1/environments/slow", None).await;
    assert_eq!((status, e["max_concurrent"].as_u64()), (StatusCode::OK, Some(1)));
    let (status, body) = call(&app, Method::GET, "/api/v1/environments/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "unknown_environment");
    let (_, e) = call(&app, Method::PUT, "/api/v1/environments/staging/pause", None).await;
    assert_eq!(e["paused"], true, "{e}");
    let id = submit_ok(&app, &submission("staging", "p", &site("p"))).await;
    wait_until(&app, &id, "waits for the pause", |d| {
        d["status"] == "queued" && d["wait_reason"].as_str().is_some_and(|w| w.contains("paused"))
    })
    .await;
    let (_, e) = call(&app, Method::PUT, "/api/v1/environments/staging/resume", None).await;
    assert_eq!(e["paused"], false);
    wait_status(&app, &id, "succeeded").await;
    let (status, e) =
        call(&app, Method::PUT, "/api/v1/environments/slow/limit", Some(&json!({"max_concurrent": 2}))).await;
    assert_eq!((status, e["max_concurrent"].as_u64()), (StatusCode::OK, Some(2)));
    for body in [
        json!({"max_concurrent": 0}),
        json!({"max_concurrent": -1}),
        json!({"max_concurrent": "2"}),
        json!({"limit": 2}),
    ] {
        let (status, answer) = call(&app, Method::PUT, "/api/v1/environments/slow/limit", Some(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    let (status, _) =
        call(&app, Method::PUT, "/api/v1/environments/nope/limit", Some(&json!({"max_concurrent": 2}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_deployment() {
    let (_h, app) = harness().await;
    let body = submission("slow", "idem", &site("i"));
    let post = |key: &'static str, body: Value| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/api/v1/deployments")
                .header(header::CONTENT_TYPE, "application/json")
                .header("Idempotency-Key", key)
                .body(Body::from(body.to_string()))
                .expect("request");
            let (status, headers, bytes) = send(&app, req).await;
            (status, headers, serde_json::from_slice::<Value>(&bytes).expect("json"))
        }
    };
    let answers = futures::future::join_all((0..5).map(|_| post("k-1", body.clone()))).await;
    assert!(answers.iter().all(|(status, _, _)| *status == StatusCode::ACCEPTED), "{answers:?}");
    let ids: std::collections::HashSet<_> = answers.iter().map(|(_, _, a)| a["id"].clone()).collect();
    assert_eq!(ids.len(), 1, "concurrent identical submissions made {answers:?}");
    assert_eq!(answers.iter().filter(|(_, _, a)| a["created"] == true).count(), 1);
    let (status, headers, again) = post("k-1", body.clone()).await;
    assert_eq!((status, again["created"].as_bool()), (StatusCode::ACCEPTED, Some(false)));
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, conflict) = post("k-1", submission("slow", "other", &site("i"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_envelope(&conflict, "idempotency_conflict");
    let (_, h) = call(&app, Method::GET, "/api/v1/deployments/history?environment=slow", None).await;
    assert_eq!(h["total"], 1);
}

#[tokio::test]
async fn shutdown_refuses_submissions_with_503() {
    let (h, app) = harness().await;
    let (status, health) = call(&app, Method::GET, "/healthz", None).await;
    assert_eq!((status, health["status"].as_str()), (StatusCode::OK, Some("ok")));
    h.handle.shutdown(Some(Duration::ZERO)).await;
    let (status, headers, body) = raw(
        &app,
        Method::POST,
        "/api/v1/deployments",
        Some("application/json"),
        Body::from(submission("staging", "late", &site("l")).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_envelope(&body, "shutting_down");
    assert!(headers.contains_key(header::RETRY_AFTER));
    let (status, _) = call(&app, Method::GET, "/api/v1/healthz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_routes_methods_and_metrics_routes() {
    let (_h, app) = harness().await;
    let (status, body) = call(&app, Method::GET, "/api/v1/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_envelope(&body, "not_found");
    let (status, body) = call(&app, Method::DELETE, "/api/v1/deployments", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_envelope(&body, "method_not_allowed");
    let (status, body) = call(&app, Method::GET, "/api/v1/deployments/01JF0000000000000000000000/cancel", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");

    let id = submit_ok(&app, &submission("staging", "m", &site("m"))).await;
    wait_status(&app, &id, "succeeded").await;
    let (status, m) = call(&app, Method::GET, "/api/v1/deployments/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((m["counts"]["succeeded"].as_u64(), m["success_rate"].as_f64()), (Some(1), Some(1.0)), "{m}");
    let (status, p) =
        call(&app, Method::GET, "/api/v1/deployments/analytics/performance?environment=staging", None).await;
    assert_eq!((status, p["succeeded"].as_u64()), (StatusCode::OK, Some(1)), "{p}");
    let (status, t) =
        call(&app, Method::GET, "/api/v1/deployments/analytics/trends?metric=Success_Rate&period=DAY", None).await;
    assert_eq!(
        (status, t["metric"].as_str(), t["period"].as_str()),
        (StatusCode::OK, Some("success_rate"), Some("day")),
        "{t}"
    );
    for (q, parameter) in [
        ("metric=speed", "metric"),
        ("metric=duration&period=week", "period"),
        ("metric=duration&from=now", "from"),
        ("metric=duration&from=2026-12-03T10:00:00Z&to=2026-12-03T10:00:00Z", "from"),
        ("period=hour", ""),
    ] {
        let (status, body) = call(&app, Method::GET, &format!("/api/v1/deployments/analytics/trends?{q}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {body}");
        if !parameter.is_empty() {
            assert_eq!(body["error"]["details"]["parameter"], parameter, "{q}: {body}");
        }
    }
    // A bad resume point is a 400 in either form, also when the other form is valid.
    let req = Request::builder()
        .uri("/api/v1/events?last_event_id=%28%5D1G")
        .header("Last-Event-ID", "0")
        .body(Body::empty())
        .expect("request");
    let (status, _, bytes) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&serde_json::from_slice(&bytes).expect("json"), "invalid_parameter");
    let (status, body) =
        call(&app, Method::GET, "/api/v1/deployments/analytics/performance?environment=nope", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_envelope(&body, "unknown_environment");
    let (status, headers, text) = text_of(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().expect("ct").starts_with("text/plain; version=0.0.4"));
    assert!(
        text.contains("tds_deployments{status=\"succeeded\"} 1")
            && text.contains("tds_environment_limit{environment=\"slow\"} 1"),
        "{text}"
    );
}

/// The `OpenAPI` document names every route, and its twins of the core's shapes have exactly the
/// fields that are serialized.
#[tokio::test]
async fn openapi_is_complete_and_matches_the_shapes() {
    let (_h, app) = harness().await;
    let (status, doc) = call(&app, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 21, "{:?}", paths.keys().collect::<Vec<_>>());
    let schema_keys = |name: &str| -> std::collections::BTreeSet<String> {
        doc["components"]["schemas"][name]["properties"].as_object().expect(name).keys().cloned().collect()
    };
    let id = submit_ok(&app, &submission("staging", "o", &site("o"))).await;
    let (_, deployment) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}/status"), None).await;
    let keys =
        |v: &Value| -> std::collections::BTreeSet<String> { v.as_object().expect("object").keys().cloned().collect() };
    assert_eq!(schema_keys("Deployment"), keys(&deployment));
    let (_, environment) = call(&app, Method::GET, "/api/v1/environments/staging", None).await;
    assert_eq!(schema_keys("Environment"), keys(&environment));
    let (_, metrics) = call(&app, Method::GET, "/api/v1/deployments/metrics", None).await;
    assert_eq!(schema_keys("Metrics"), keys(&metrics));
    let (_, performance) = call(&app, Method::GET, "/api/v1/deployments/analytics/performance", None).await;
    assert_eq!(schema_keys("Performance"), keys(&performance));
    let (_, trends) = call(&app, Method::GET, "/api/v1/deployments/analytics/trends?metric=retries", None).await;
    assert_eq!(schema_keys("Trends"), keys(&trends));
}

const ADMIN: &str = "admin-secret";
const OPERATOR: &str = "operator-secret";
const VIEWER: &str = "viewer-secret";

/// Each role × each route: no token and a wrong token are 401 with a challenge, a role below the
/// route's is 403, a role at or above it gets through; `/healthz` and the document are open.
#[tokio::test]
async fn auth_matrix_each_role_each_route() {
    let tokens = format!(
        "[[tokens]]\nname = \"a\"\nsha256 = \"{}\"\nrole = \"admin\"\n[[tokens]]\nname = \"o\"\nsha256 = \"{}\"\nrole = \"operator\"\n[[tokens]]\nname = \"v\"\nsha256 = \"{}\"\nrole = \"viewer\"\n",
        api::auth::hash_token(ADMIN),
        api::auth::hash_token(OPERATOR),
        api::auth::hash_token(VIEWER)
    );
    let h = Harness::start(&format!("{ENVS}\n{tokens}")).await;
    let app = api::router(h.handle.clone());
    let id = h.submit("staging", "site.tar.gz", site("auth"), "1").await.id.to_string();
    let submit = submission("staging", "2", &site("auth2"));
    // (method, uri, body, needed role: 0 viewer, 1 operator, 2 admin)
    let routes: Vec<(Method, String, Option<Value>, usize)> = vec![
        (Method::GET, format!("/api/v1/deployments/{id}/status"), None, 0),
        (Method::GET, format!("/api/v1/deployments/{id}"), None, 0),
        (Method::GET, format!("/api/v1/deployments/{id}/logs"), None, 0),
        (Method::GET, format!("/api/v1/deployments/{id}/logs?follow=true"), None, 0),
        (Method::GET, "/api/v1/deployments/history".into(), None, 0),
        (Method::GET, "/api/v1/deployments/metrics".into(), None, 0),
        (Method::GET, "/api/v1/deployments/analytics/performance".into(), None, 0),
        (Method::GET, "/api/v1/deployments/analytics/trends?metric=deployments".into(), None, 0),
        (Method::GET, "/api/v1/environments".into(), None, 0),
        (Method::GET, "/api/v1/environments/staging".into(), None, 0),
        (Method::GET, "/api/v1/events".into(), None, 0),
        (Method::GET, "/metrics".into(), None, 0),
        (Method::GET, "/api/v1/metrics".into(), None, 0),
        (Method::POST, "/api/v1/deployments".into(), Some(submit), 1),
        (Method::PUT, format!("/api/v1/deployments/{id}/cancel"), None, 1),
        (Method::POST, format!("/api/v1/deployments/{id}/retry"), None, 1),
        (Method::POST, format!("/api/v1/deployments/{id}/rollback"), None, 1),
        (Method::PUT, format!("/api/v1/deployments/{id}/priority"), Some(json!({"priority": "high"})), 1),
        (Method::PUT, "/api/v1/environments/qa-none/pause".into(), None, 2),
        (Method::PUT, "/api/v1/environments/staging/resume".into(), None, 2),
        (Method::PUT, "/api/v1/environments/staging/limit".into(), Some(json!({"max_concurrent": 3})), 2),
    ];
    let roles = [VIEWER, OPERATOR, ADMIN];
    for (method, uri, body, needed) in &routes {
        for (token, expect) in [(None, StatusCode::UNAUTHORIZED), (Some("wrong"), StatusCode::UNAUTHORIZED)] {
            let (status, headers, bytes) = send(&app, request(method.clone(), uri, token, body.as_ref())).await;
            assert_eq!(status, expect, "{method} {uri} with {token:?}");
            assert!(headers.contains_key(header::WWW_AUTHENTICATE), "{method} {uri}");
            assert_envelope(&serde_json::from_slice(&bytes).expect("json"), "unauthorized");
        }
        for (rank, token) in roles.iter().enumerate() {
            let req = request(method.clone(), uri, Some(token), body.as_ref());
            // Streaming answers (events, follow) are judged by their status line only.
            let response = app.clone().oneshot(req).await.expect("infallible");
            let status = response.status();
            if rank < *needed {
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri} as rank {rank}");
                let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
                assert_envelope(&serde_json::from_slice(&bytes).expect("json"), "forbidden");
            } else {
                assert!(
                    status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
                    "{method} {uri} as rank {rank}: {status}"
                );
            }
        }
    }
    let (status, _) = call_as(&app, Method::GET, "/api/v1/deployments/history", Some("Basic abc"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for open in ["/healthz", "/api/v1/healthz", "/api/v1/openapi.json"] {
        let (status, _) = call(&app, Method::GET, open, None).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
    // The caller's token name is recorded as who asked.
    let (_, answer) = call_as(
        &app,
        Method::POST,
        "/api/v1/deployments",
        Some(OPERATOR),
        Some(&submission("staging", "3", &site("x"))),
    )
    .await;
    let (_, d) = call_as(
        &app,
        Method::GET,
        &format!("/api/v1/deployments/{}/status", answer["id"].as_str().expect("id")),
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(d["requested_by"], "o");
}

/// Over a real socket: the CLI client submits a real tar.gz with `--wait` (exit 0; a failing one
/// exits 1), logs are followed to their final status record, server-sent events arrive in order
/// and resume with `Last-Event-ID`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_socket_cli_wait_follow_and_events() {
    let h = Harness::start(&format!(
        "{ENVS}\n{}",
        r#"
[[environments]]
name = "paced"
root = "{dir}/envs/paced"
steps = [{ name = "count", run = "for i in 1 2 3; do echo tick $i; sleep 0.3; done" }]
"#
    ))
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, api::router(h.handle.clone()), stop.clone()));
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();

    // Events first, so that every change of the deployments below is seen.
    let events = http.get(format!("{base}/api/v1/events")).send().await.expect("events");
    assert_eq!(events.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut event_stream = events.bytes_stream();

    let artifact = h.dir.path().join("site.tar.gz");
    std::fs::write(&artifact, site("cli")).expect("write artifact");
    let client = ClientArgs { url: base.clone(), token: None, json: false };
    let args = |env: &str| SubmitArgs {
        environment: env.into(),
        artifact: artifact.clone(),
        version: "cli-1".into(),
        priority: "HIGH".into(),
        params: vec!["NOTE=hello".into()],
        wait: true,
        idempotency_key: None,
        client: client.clone(),
    };
    let code = tokio::time::timeout(TIMEOUT, tds::client::execute(Command::Submit(args("staging"))))
        .await
        .expect("--wait returned")
        .expect("submit");
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(h.root("staging").join("current/VERSION")).expect("VERSION"), "cli");
    let code = tokio::time::timeout(TIMEOUT, tds::client::execute(Command::Submit(args("broken"))))
        .await
        .expect("--wait returned")
        .expect("submit");
    assert_eq!(code, 1, "a failed deployment exits non-zero");
    let err = tds::client::execute(Command::Status { id: "01JF0000000000000000000000".into(), client: client.clone() })
        .await
        .expect_err("unknown id");
    assert!(err.to_string().contains("no deployment with id 01JF0000000000000000000000"), "{err}");

    // Follow the log of a deployment that prints over a second: records arrive, then the end.
    let paced: Value = http
        .post(format!("{base}/api/v1/deployments?environment=paced&name=site.tar.gz"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(site("paced"))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let paced_id = paced["id"].as_str().expect("id").to_owned();
    let follow = http
        .get(format!("{base}/api/v1/deployments/{paced_id}/logs?follow=true&format=text"))
        .send()
        .await
        .expect("follow");
    let mut body = follow.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        }
    })
    .await
    .expect("follow ended by itself");
    let ticks: Vec<usize> = (1..=3).map(|i| text.find(&format!("tick {i}")).expect("tick")).collect();
    assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(
        text.trim_end().lines().last().is_some_and(|l| l.contains("== status") && l.contains("deployment succeeded")),
        "{text}"
    );

    // The CLI follows too (its output goes to stdout; here only its exit matters).
    let logs =
        LogsArgs { id: paced_id.clone(), follow: true, format: "text".into(), attempt: None, client: client.clone() };
    assert_eq!(tds::client::execute(Command::Logs(logs)).await.expect("logs"), 0);

    // The events seen so far: ids strictly increase, and each deployment went through its
    // states in the order of the state machine.
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let mut buffer = String::new();
    tokio::time::timeout(TIMEOUT, async {
        while !seen.iter().any(|(_, id, s)| *id == paced_id && s == "succeeded") {
            let chunk = event_stream.next().await.expect("stream open").expect("chunk");
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let frame: String = buffer.drain(..end + 2).collect();
                let data = frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("{}");
                let v: Value = serde_json::from_str(data).expect("event data");
                if v["type"] == "deployment" {
                    let d = &v["data"];
                    seen.push((
                        v["id"].as_u64().expect("id"),
                        d["id"].as_str().expect("id").into(),
                        d["status"].as_str().expect("s").into(),
                    ));
                }
            }
        }
    })
    .await
    .expect("events arrived");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "event ids not increasing: {seen:?}");
    let paced_states: Vec<&str> =
        seen.iter().filter(|(_, id, _)| *id == paced_id).map(|(_, _, s)| s.as_str()).collect();
    let mut order = paced_states.clone();
    order.dedup();
    assert_eq!(order, ["queued", "running", "succeeded"], "{paced_states:?}");

    // Resume after the first of them: exactly the later ones come back, first in line.
    let first = seen[0].0;
    let resumed = http
        .get(format!("{base}/api/v1/events"))
        .header("Last-Event-ID", first.to_string())
        .send()
        .await
        .expect("resume");
    let mut resumed = resumed.bytes_stream();
    let chunk =
        tokio::time::timeout(TIMEOUT, resumed.next()).await.expect("resumed event").expect("open").expect("chunk");
    let text = String::from_utf8_lossy(&chunk);
    assert!(
        text.starts_with(&format!("id: {}\n", first + 1)) || text.contains(&format!("\nid: {}\n", first + 1)),
        "{text}"
    );
    let bad = http.get(format!("{base}/api/v1/events")).header("Last-Event-ID", "x").send().await.expect("bad");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Shutdown ends the streams, so the server stops.
    drop((event_stream, resumed));
    h.handle.shutdown(Some(Duration::ZERO)).await;
    stop.cancel();
    tokio::time::timeout(TIMEOUT, server).await.expect("server stopped").expect("join").expect("serve");
}

/// Open file descriptors of this process that point at `path`.
fn open_fds_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| {
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok()).filter(|target| target == path).count()
    })
}

/// A log follower that disconnects frees the stream at once: its file is closed within a poll
/// interval, while the deployment keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_follow_frees_the_file_when_the_client_disconnects() {
    let (h, app) = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, app.clone(), stop.clone()));
    let id = submit_ok(&app, &submission("slow", "f", &site("f"))).await;
    wait_status(&app, &id, "running").await;
    let path = h.handle.log_path(id.parse().expect("id"), 1);
    // The running attempt's own writer holds the file open too.
    let writers = open_fds_on(&path);
    let response =
        reqwest::get(format!("http://{addr}/api/v1/deployments/{id}/logs?follow=true")).await.expect("follow");
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(TIMEOUT, body.next()).await.expect("a first chunk").expect("open").expect("chunk");
    assert!(!first.is_empty());
    assert_eq!(open_fds_on(&path), writers + 1, "the follower holds the log open");
    drop(body);
    wait_for(TIMEOUT, "the follower's file to close", || async { (open_fds_on(&path) == writers).then_some(()) }).await;
    let (_, d) = call(&app, Method::GET, &format!("/api/v1/deployments/{id}/status"), None).await;
    assert_eq!(d["status"], "running");
    let _ = call(&app, Method::PUT, &format!("/api/v1/deployments/{id}/cancel"), None).await;
    h.handle.shutdown(Some(Duration::ZERO)).await;
    stop.cancel();
    tokio::time::timeout(TIMEOUT, server).await.expect("server stopped").expect("join").expect("serve");
}
