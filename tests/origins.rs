//! Browsers on other sites (CORS_ORIGINS) and the security headers, over real HTTP:
//! a listed origin's requests and preflights are let in with CORS headers, on REST
//! and on Socket.IO's polling; any other origin is refused before a handler runs,
//! WebSocket upgrades included; requests without `Origin` (apps, servers) pass.
//! The official socket.io-client's side of this is in `tests/socketio/origins.test.mjs`.

mod common;

use common::{Backend, Harness, raw_with_headers};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::Value;

const APP: &str = "http://app.example:8080";
const ELSEWHERE: &str = "http://elsewhere.example";
const POLL: &str = "/socket.io/?EIO=4&transport=polling";
const WEBSOCKET: &str = "/socket.io/?EIO=4&transport=websocket";

async fn with_app_listed() -> Harness {
    Harness::start_with(
        Backend::Sqlite,
        &["--cors-origins", &format!("{APP},https://other.example")],
    )
    .await
}

fn from(origin: &str) -> (&'static str, String) {
    ("origin", origin.to_owned())
}

fn bearer(h: &Harness, user: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {}", h.token(user)))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A WebSocket handshake request's headers, with `extra`.
fn websocket(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("connection", "Upgrade".into()),
        ("upgrade", "websocket".into()),
        ("sec-websocket-version", "13".into()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// Asserts a refusal of `origin`: 403 in the JSON error shape, without CORS headers.
fn assert_refused(status: StatusCode, headers: &HeaderMap, body: &[u8], origin: &str) {
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(body)
    );
    let body: Value = serde_json::from_slice(body).expect("a JSON error");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], "ORIGIN_NOT_ALLOWED", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(origin) && message.contains("CORS_ORIGINS"),
        "{body}"
    );
    assert_eq!(header(headers, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn a_listed_origin_is_let_in_with_cors_headers_on_rest_and_socketio_polling() {
    let h = with_app_listed().await;
    let (status, headers, body) = raw_with_headers(
        h.addr(),
        Method::GET,
        "/api/v1/calls/active",
        &[from(APP), bearer(&h, "alice")],
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    assert!(
        header(&headers, "vary").is_some_and(|v| v.contains("origin")),
        "{headers:?}"
    );

    let (status, headers, body) =
        raw_with_headers(h.addr(), Method::GET, POLL, &[from(APP)], vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with(b"0{\"sid\""),
        "an Engine.IO handshake: {body:?}"
    );
    assert_eq!(header(&headers, "access-control-allow-origin"), Some(APP));
    h.finish().await;
}

#[tokio::test]
async fn a_listed_origins_preflight_is_answered_for_rest_and_socketio() {
    let h = with_app_listed().await;
    for path in ["/api/v1/calls/start", POLL] {
        let (status, headers, _) = raw_with_headers(
            h.addr(),
            Method::OPTIONS,
            path,
            &[
                from(APP),
                ("access-control-request-method", "POST".into()),
                (
                    "access-control-request-headers",
                    "authorization,content-type".into(),
                ),
            ],
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            header(&headers, "access-control-allow-origin"),
            Some(APP),
            "{path}"
        );
        let methods = header(&headers, "access-control-allow-methods").unwrap_or_default();
        assert!(
            methods.contains("POST") && methods.contains("PATCH"),
            "{methods}"
        );
        let allowed = header(&headers, "access-control-allow-headers").unwrap_or_default();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(
            header(&headers, "access-control-max-age").is_some(),
            "{headers:?}"
        );
    }
    h.finish().await;
}

#[tokio::test]
async fn another_origin_is_refused_everywhere_and_changes_nothing() {
    let h = with_app_listed().await;
    let start = br#"{"type":"video","participantIds":["bob"]}"#.to_vec();
    let (status, headers, body) = raw_with_headers(
        h.addr(),
        Method::POST,
        "/api/v1/calls/start",
        &[
            from(ELSEWHERE),
            bearer(&h, "alice"),
            ("content-type", "application/json".into()),
        ],
        start,
    )
    .await;
    assert_refused(status, &headers, &body, ELSEWHERE);
    let (status, active) = h.get("/api/v1/calls/active", "alice").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        active["data"]["calls"],
        serde_json::json!([]),
        "nothing was started: {active}"
    );

    let preflight = [
        from(ELSEWHERE),
        ("access-control-request-method", "POST".to_owned()),
    ];
    let (status, headers, body) = raw_with_headers(
        h.addr(),
        Method::OPTIONS,
        "/api/v1/calls/start",
        &preflight,
        vec![],
    )
    .await;
    assert_refused(status, &headers, &body, ELSEWHERE);
    let (status, headers, body) =
        raw_with_headers(h.addr(), Method::GET, POLL, &[from(ELSEWHERE)], vec![]).await;
    assert_refused(status, &headers, &body, ELSEWHERE);
    let (status, headers, body) = raw_with_headers(
        h.addr(),
        Method::GET,
        WEBSOCKET,
        &websocket(&[from(ELSEWHERE)]),
        vec![],
    )
    .await;
    assert_refused(status, &headers, &body, ELSEWHERE);
    // A scheme or a port of its own makes another origin; pages in sandboxes and
    // files send `null`.
    for origin in ["https://app.example:8080", "http://app.example", "null"] {
        let (status, headers, body) =
            raw_with_headers(h.addr(), Method::GET, POLL, &[from(origin)], vec![]).await;
        assert_refused(status, &headers, &body, origin);
    }
    h.finish().await;
}

#[tokio::test]
async fn a_websocket_upgrade_from_a_listed_origin_goes_through() {
    let h = with_app_listed().await;
    let (status, _, _) = raw_with_headers(
        h.addr(),
        Method::GET,
        WEBSOCKET,
        &websocket(&[from(APP)]),
        vec![],
    )
    .await;
    assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
    h.finish().await;
}

#[tokio::test]
async fn unset_it_is_the_same_origin_only_and_clients_without_origin_pass() {
    let h = Harness::start(Backend::Sqlite).await;
    let own = format!("http://{}", h.addr());
    for headers in [vec![from(&own)], vec![]] {
        let (status, response, _) =
            raw_with_headers(h.addr(), Method::GET, POLL, &headers, vec![]).await;
        assert_eq!(status, StatusCode::OK, "{headers:?}");
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "no CORS headers"
        );
        assert_eq!(header(&response, "vary"), None);
        let (status, _, _) = raw_with_headers(
            h.addr(),
            Method::GET,
            WEBSOCKET,
            &websocket(&headers),
            vec![],
        )
        .await;
        assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS, "{headers:?}");
    }
    let other_port = format!("http://127.0.0.1:{}", h.addr().port() + 1);
    for origin in [APP, other_port.as_str()] {
        let (status, headers, body) =
            raw_with_headers(h.addr(), Method::GET, POLL, &[from(origin)], vec![]).await;
        assert_refused(status, &headers, &body, origin);
        let (status, headers, body) = raw_with_headers(
            h.addr(),
            Method::GET,
            WEBSOCKET,
            &websocket(&[from(origin)]),
            vec![],
        )
        .await;
        assert_refused(status, &headers, &body, origin);
    }
    h.finish().await;
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_the_demo_page_a_policy_it_runs_under() {
    let h = Harness::start(Backend::Sqlite).await;
    let paths = [
        "/health",
        "/api/v1/calls/active",
        "/no/such/path",
        POLL,
        "/demo/socket.io.min.js",
        "/",
    ];
    for path in paths {
        let (status, headers, _) = raw_with_headers(h.addr(), Method::GET, path, &[], vec![]).await;
        assert!(
            status.is_success() || status.is_client_error(),
            "{path}: {status}"
        );
        assert_eq!(
            header(&headers, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(&headers, "referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"), "{path}");
        let csp = header(&headers, "content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        if path == "/" {
            // Its inline script and style by hash, the Socket.IO client and requests
            // from this server only; tests/browser runs the page under it.
            assert!(csp.contains("script-src 'self' 'sha256-"), "{csp}");
            assert!(csp.contains("style-src 'sha256-"), "{csp}");
            assert!(csp.contains("connect-src 'self'"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
        } else {
            assert_eq!(csp, "default-src 'none'; frame-ancestors 'none'", "{path}");
        }
    }
    h.finish().await;
}
