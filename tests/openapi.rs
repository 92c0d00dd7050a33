//! The OpenAPI document (`/api/openapi.json`) against the server it describes: every
//! route of the router has a documented operation and every operation a route; Swagger
//! UI (`/api/docs`) is served whole by Huddle; and schemathesis (PyPI, pinned in
//! `tests/openapi/requirements.txt`, installed into `tests/openapi/.venv` on first run)
//! sends generated requests, valid and not, to every operation of a live server and
//! finds no 5xx and no answer that breaks the document.

mod common;
mod python_venv;

use std::collections::BTreeSet;
use std::process::Command;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use tower_service::Service;

use common::{Backend, Harness, raw_with_headers};
use huddle::api::{MetricsRoute, app};

/// `(method, path)` of a route or an operation, e.g. `("POST", "/api/v1/calls/start")`.
type Operations = BTreeSet<(String, String)>;

/// The routes axum holds in `router`, read from its `Debug` form: axum has no other
/// way to list them, and reading the router itself (not a list kept beside it) is the
/// point. The form is `RouteId(n): MethodRouter(MethodRouter { get: Route, head: None,
/// … })` per route and `RouteId(n): "/path"` in its node; a change of that form fails
/// the assertions here rather than passing with nothing read.
fn routes_of(router: &axum::Router) -> Operations {
    let text = format!("{router:?}");
    let (own, _fallbacks) = text
        .split_once("fallback_router:")
        .expect("axum's Router Debug names its fallback_router");
    let mut paths = std::collections::BTreeMap::new();
    let mut methods = std::collections::BTreeMap::new();
    for entry in own.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): ").expect("RouteId(n): …");
        if let Some(path) = rest.strip_prefix('"') {
            let path = &path[..path.find('"').expect("a quoted path")];
            paths.insert(id.to_owned(), path.to_owned());
        } else if let Some(fields) = rest.strip_prefix("MethodRouter(MethodRouter { ") {
            let fields = &fields[..fields.find("fallback:").expect("MethodRouter's fallback")];
            let served: Vec<String> = fields
                .split(", ")
                .filter_map(|field| field.split_once(": "))
                .filter(|(_, endpoint)| !endpoint.starts_with("None"))
                .map(|(method, _)| method.to_ascii_uppercase())
                .collect();
            methods.insert(id.to_owned(), served);
        } else {
            panic!("an unexpected route entry in axum's Router Debug: {rest:.80}");
        }
    }
    assert!(paths.len() > 20, "read only {paths:?} from {text:.400}");
    assert_eq!(
        paths.keys().collect::<Vec<_>>(),
        methods.keys().collect::<Vec<_>>(),
        "every route id has a path and a method router"
    );
    let mut routes = Operations::new();
    for (id, path) in paths {
        assert!(!methods[&id].is_empty(), "{path} serves no method");
        for method in &methods[&id] {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

/// The operations of an OpenAPI document.
fn operations_of(document: &Value) -> Operations {
    let mut operations = Operations::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if ["parameters", "summary", "description", "servers"].contains(&method.as_str()) {
                continue;
            }
            operations.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    operations
}

/// `GET /api/openapi.json` of `router`, in-process.
async fn document_of(router: &mut axum::Router) -> Value {
    let request = Request::get("/api/openapi.json")
        .body(axum::body::Body::new(Empty::<Bytes>::new()))
        .unwrap();
    let response = router.call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).expect("the document is JSON")
}

#[tokio::test]
async fn every_route_has_a_documented_operation_and_every_operation_a_route() {
    let h = Harness::start(Backend::Sqlite).await;
    for metrics in [MetricsRoute::Main, MetricsRoute::Separate] {
        let mut router = app(h.server.state.clone(), metrics);
        let routes = routes_of(&router);
        let document = document_of(&mut router).await;
        let operations = operations_of(&document);
        let undocumented: Vec<_> = routes.difference(&operations).collect();
        let unrouted: Vec<_> = operations.difference(&routes).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "{metrics:?}: routes without an operation: {undocumented:?}; operations \
             without a route: {unrouted:?}"
        );
        let metrics_documented = operations.contains(&("GET".into(), "/metrics".into()));
        assert_eq!(metrics_documented, metrics == MetricsRoute::Main);
    }
    h.finish().await;
}

/// What the live server answers `method path` (with a token, and `{}` as the body of
/// a POST or PATCH), the router's fallbacks told apart by their messages.
async fn reaches_a_handler(h: &Harness, method: &str, path: &str, token: &str) -> bool {
    let path = path
        .replace("{callId}", "5f0c8a4e-8c3e-4d43-9b0c-4a1d7b2e9f10")
        .replace("{number}", "%2B14155552671")
        .replace("{file}", "swagger-ui.css");
    let method: Method = method.parse().unwrap();
    let body = if method == Method::GET {
        Vec::new()
    } else {
        b"{}".to_vec()
    };
    let headers = [
        ("authorization", format!("Bearer {token}")),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, _, bytes) = raw_with_headers(h.addr(), method, &path, &headers, body).await;
    let text = String::from_utf8_lossy(&bytes);
    let fallback = (status == StatusCode::NOT_FOUND && text.contains("no such endpoint"))
        || status == StatusCode::METHOD_NOT_ALLOWED;
    !fallback
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_each_operation_reaches_its_handler() {
    let h = Harness::start(Backend::Sqlite).await;
    let (status, head, bytes) =
        raw_with_headers(h.addr(), Method::GET, "/api/openapi.json", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(head["content-type"], "application/json");
    let document: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let start = &document["paths"]["/api/v1/calls/start"]["post"];
    assert_eq!(start["security"][0]["bearer"], serde_json::json!([]));
    for status in ["200", "400", "401", "409", "413", "415", "429"] {
        assert!(start["responses"][status].is_object(), "start: {status}");
    }
    let token = h.admin_token("ops");
    for (method, path) in operations_of(&document) {
        assert!(
            reaches_a_handler(&h, &method, &path, &token).await,
            "{method} {path} is documented but the router's fallback answers it"
        );
    }
    assert!(!reaches_a_handler(&h, "GET", "/api/v1/nothing", &token).await);
    h.finish().await;
}

#[tokio::test]
async fn swagger_ui_is_served_by_huddle_with_every_file_it_loads() {
    let h = Harness::start(Backend::Sqlite).await;
    let get = |path: &'static str| raw_with_headers(h.addr(), Method::GET, path, &[], Vec::new());
    let (status, head, page) = get("/api/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        head["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = head["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("connect-src 'self'"),
        "Swagger UI may run its own scripts and ask this server only: {policy}"
    );
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(
        !page.contains("//"),
        "the page loads nothing from elsewhere"
    );
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/swagger-ui");
    for (file, content_type) in [
        ("swagger-ui-bundle.js", "text/javascript"),
        ("swagger-ui.css", "text/css"),
        ("swagger-initializer.js", "text/javascript"),
    ] {
        let path = format!("/api/docs/{file}");
        assert!(page.contains(&path), "the page loads {path}");
        let (status, head, bytes) =
            raw_with_headers(h.addr(), Method::GET, &path, &[], Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            head["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {:?}",
            head["content-type"]
        );
        assert_eq!(bytes, std::fs::read(web.join(file)).unwrap(), "{path}");
    }
    let (_, _, initializer) = get("/api/docs/swagger-initializer.js").await;
    assert!(String::from_utf8_lossy(&initializer).contains("url: \"/api/openapi.json\""));
    let (status, _, body) = get("/api/docs/missing.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "NOT_FOUND");
    h.finish().await;
}

/// Generated requests per operation: enough to try each parameter's edges and bad
/// shapes, few enough that the run takes about a minute on two cores.
const MAX_EXAMPLES: &str = "300";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let venv = python_venv::install("openapi");
    // Rate limits off: the harness's clock stands still, so spent buckets would never
    // refill, and every answer would be a (documented) 429. Accounts on, so that
    // registrations and logins are answered, not only 404 `ACCOUNTS_DISABLED`.
    let h = Harness::start_with(
        Backend::Sqlite,
        &[
            "--rate-limit-user-per-sec",
            "0",
            "--rate-limit-ip-per-sec",
            "0",
            "--auth-accounts",
            "true",
        ],
    )
    .await;
    // A call ringing the token's user, whose id, a phone number and a file of Swagger
    // UI schemathesis uses as the paths' `callId`, `number` and `file`
    // (`schemathesis.toml`, read from its working folder), so that generated requests
    // reach a call, a history and a file, not only 404s.
    let call = h.start_call("carol", "video", &["ops"]).await;
    let url = format!("http://{}/api/openapi.json", h.addr());
    let auth = format!("Authorization: Bearer {}", h.admin_token("ops"));
    // schemathesis keeps a cache in its working folder: a scratch one, removed after.
    let scratch = std::env::temp_dir().join(format!(
        "huddle-schemathesis-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(
        scratch.join("schemathesis.toml"),
        format!(
            "[parameters]\ncallId = \"{call}\"\nnumber = \"+14155552671\"\n\
             file = \"swagger-ui.css\"\n"
        ),
    )
    .unwrap();
    let cwd = scratch.clone();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/st"))
            .current_dir(cwd)
            .args(["--no-color", "run", &url, "--header", &auth])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,\
                     content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", MAX_EXAMPLES, "--seed", "18"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--workers", "1", "--request-timeout", "10"])
            .args(["--suppress-health-check", "all"])
            // Nothing written to disk: no examples database in the working folder.
            .args(["--generation-database", "none"])
            .output()
            .expect("run schemathesis")
    })
    .await;
    let _ = std::fs::remove_dir_all(&scratch);
    h.finish().await;
    let run = run.unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    eprintln!(
        "schemathesis: {}",
        out.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    assert!(
        run.status.success(),
        "schemathesis failed:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
