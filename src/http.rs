//! The HTTP server: /metrics, /healthz, /readyz, /rules, /pairs, POST /-/reload,
//! POST /explain.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::decode::{decode, Limits};
use crate::pipeline::Shared;

/// The router, for tests that serve it themselves.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/rules", get(rules))
        .route("/-/reload", post(reload))
        .route("/explain", post(explain))
        .route("/pairs", get(pairs))
        .with_state(shared)
}

/// Serve until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let app = router(shared);
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the source is not connected\n",
        )
            .into_response()
    }
}

async fn rules(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let rs = s.rules.load();
    Json(json!({
        "version": rs.version,
        "loaded_at": **s.loaded_at.load(),
        "origin": match &s.origin { crate::pipeline::RulesOrigin::Dir(d) => d.display().to_string(), crate::pipeline::RulesOrigin::Embedded => "embedded".into() },
        "files": rs.files,
        "rules": rs.rules.iter().map(|r| json!({
            "id": r.id, "title": r.title, "category": r.category, "severity": r.severity.as_str(),
            "score": r.score, "enabled": r.enabled, "tags": r.tags,
            "file": r.file.display().to_string(), "line": r.line,
        })).collect::<Vec<_>>(),
    }))
}

fn authorised(s: &Shared, headers: &HeaderMap) -> Result<(), Box<Response>> {
    if !s.enable_post {
        let r = (
            StatusCode::FORBIDDEN,
            "POST endpoints are disabled (http.enable_post = false)\n",
        );
        return Err(Box::new(r.into_response()));
    }
    if let Some(tok) = &s.bearer_token {
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if got != Some(tok.as_str()) {
            let r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
            return Err(Box::new(r.into_response()));
        }
    }
    Ok(())
}

async fn reload(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    match s.reload("http").await {
        Ok(v) => (StatusCode::OK, Json(json!({"status": "reloaded", "version": v}))).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"status": "rejected", "error": e.to_string(), "version": s.rules.load().version})),
        )
            .into_response(),
    }
}

async fn explain(State(s): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorised(&s, &headers) {
        return *r;
    }
    let mut post = match decode(&body, &Limits::default()) {
        Ok(p) => p,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    };
    let rs = s.rules.load();
    rs.registry.enrich(&mut post);
    let traces = crate::commands::explain::traces(&rs, &post);
    Json(crate::commands::explain::render_json(&rs, &post, &traces)).into_response()
}

/// `GET /pairs?limit=N`: the escalation index, highest first, with evidence and the
/// level history of each pair direction (valued at the latest event time).
async fn pairs(
    State(s): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(e) = &s.escalation else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "the escalation index is off (escalation.enabled = false)"})),
        )
            .into_response();
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "limit must be a non-negative integer"})),
            )
                .into_response()
        }
    };
    let mut pairs = e.view();
    let total = pairs.len();
    pairs.truncate(limit);
    let watermark = e.watermark().map(crate::alert::rfc3339);
    Json(json!({
        "schema": "attache.pairs.v1",
        "as_of": watermark,
        "levels": e.settings.levels,
        "half_life_hours": e.settings.half_life_hours,
        "total": total,
        "pairs": pairs,
    }))
    .into_response()
}
