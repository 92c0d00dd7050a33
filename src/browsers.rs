//! What browsers are told and refused, on every request to the HTTP port (REST,
//! the demo page and Socket.IO's own polling and WebSocket requests alike):
//! - a request whose `Origin` is neither this server's own (the `Host` it was sent
//!   to) nor listed in CORS_ORIGINS is refused, 403 `ORIGIN_NOT_ALLOWED`, before any
//!   handler runs. Browsers apply CORS to `fetch` and to polling but not to
//!   WebSockets, so the server itself must check; a refusal also keeps a page on
//!   another site from making a request that changes something and ignoring the
//!   answer. Requests without `Origin` (apps, servers, `curl`) are not browsers' and
//!   pass;
//! - a listed origin's preflight (`OPTIONS` with `Access-Control-Request-Method`) is
//!   answered here, and its other requests get `Access-Control-Allow-Origin`. The
//!   same origin gets no CORS headers: it needs none;
//! - every response carries `X-Content-Type-Options`, `Referrer-Policy`,
//!   `X-Frame-Options` and, unless its handler chose one (the demo page does), a
//!   Content-Security-Policy that lets it load nothing.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::wire::Failure;

/// The policy of responses that chose none: JSON and scripts render nothing, so
/// nothing may be loaded or framed.
const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
/// Methods a listed origin's preflight is told it may use.
const ALLOW_METHODS: &str = "GET, POST, PATCH";
/// Request headers a listed origin's preflight is told it may send: tokens and
/// JSON bodies.
const ALLOW_HEADERS: &str = "authorization, content-type";
/// Seconds a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// A web origin, `scheme://host[:port]`, as browsers send it in `Origin`: scheme and
/// host in lower case, the port given only when it is not the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    host: String,
    port: u16,
}

impl Origin {
    /// Reads an `http://` or `https://` origin; a trailing `/` is tolerated, any
    /// other path, a query or credentials are not.
    pub fn parse(value: &str) -> Result<Origin, String> {
        let lower = value.to_ascii_lowercase();
        let (https, rest) = match (
            lower.strip_prefix("http://"),
            lower.strip_prefix("https://"),
        ) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_authority(authority).ok_or_else(|| {
            "must be scheme://host[:port], without a path, a query or credentials".to_owned()
        })?;
        let default = if https { 443 } else { 80 };
        Ok(Origin {
            https,
            host: host.to_owned(),
            port: port.unwrap_or(default),
        })
    }

    /// Whether a request with this `Origin` was sent to that same origin, going by
    /// its `Host` header (a `Host` without a port means the origin's default port).
    fn is_host(&self, host: &str) -> bool {
        split_authority(&host.to_ascii_lowercase()).is_some_and(|(name, port)| {
            name == self.host && port.unwrap_or(self.default_port()) == self.port
        })
    }

    fn default_port(&self) -> u16 {
        if self.https { 443 } else { 80 }
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.host)?;
        if self.port != self.default_port() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

/// `host[:port]` (a bracketed IPv6 address for a host): the host, and the port if
/// one is given. None when it is anything else.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let end = v6.find(']')?;
            let host = &authority[..end + 2];
            let fine = |c: char| c.is_ascii_hexdigit() || matches!(c, ':' | '.');
            if end == 0 || !v6[..end].chars().all(fine) {
                return None;
            }
            (host, &authority[end + 2..])
        }
        None => {
            let split = authority.find(':').unwrap_or(authority.len());
            let host = &authority[..split];
            let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
            if host.is_empty() || !host.chars().all(fine) {
                return None;
            }
            (host, &authority[split..])
        }
    };
    let port = match port {
        "" => None,
        port => Some(port.strip_prefix(':')?.parse().ok().filter(|&p| p != 0)?),
    };
    Some((host, port))
}

/// The origins of other sites' pages allowed in (CORS_ORIGINS). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Browsers {
    allowed: Arc<[Origin]>,
}

/// What a request's `Origin` makes of it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// No `Origin`: not a browser's cross-site request.
    Unmarked,
    /// This server's own origin.
    Same,
    /// Another origin, listed in CORS_ORIGINS: the header value to echo.
    Listed(HeaderValue),
    /// Anything else, `null` included: the value, to name in the refusal.
    Refused(String),
}

impl Browsers {
    pub fn new(allowed: Vec<Origin>) -> Self {
        Self {
            allowed: allowed.into(),
        }
    }

    fn judge(&self, headers: &HeaderMap) -> Verdict {
        let Some(value) = headers.get(header::ORIGIN) else {
            return Verdict::Unmarked;
        };
        let text = value.to_str().unwrap_or_default();
        let Ok(origin) = Origin::parse(text) else {
            return Verdict::Refused(text.chars().take(100).collect());
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if host.is_some_and(|host| origin.is_host(host)) {
            Verdict::Same
        } else if self.allowed.contains(&origin) {
            Verdict::Listed(value.clone())
        } else {
            Verdict::Refused(origin.to_string())
        }
    }
}

/// The middleware, outermost on the HTTP port (outside Socket.IO's layer, which
/// answers its own paths): see the module's summary.
pub async fn guard(State(browsers): State<Browsers>, request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match browsers.judge(request.headers()) {
        Verdict::Refused(origin) => Failure::new(
            StatusCode::FORBIDDEN,
            "ORIGIN_NOT_ALLOWED",
            format!(
                "pages from {origin} may not call this server: it is not this server's \
                 origin, nor in CORS_ORIGINS"
            ),
        )
        .into_response(),
        Verdict::Listed(origin) if preflight => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            for (name, value) in [
                (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS),
                (header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE),
            ] {
                headers.insert(name, HeaderValue::from_static(value));
            }
            response
        }
        Verdict::Listed(origin) => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after"),
            );
            response
        }
        Verdict::Same | Verdict::Unmarked => next.run(request).await,
    };
    let headers = response.headers_mut();
    if !browsers.allowed.is_empty() {
        // Whether the answer carries CORS headers depends on the asker.
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, DEFAULT_CSP),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    #[test]
    fn origins_are_read_as_browsers_write_them() {
        let origin = Origin::parse("HTTPS://App.Example.org:443/").unwrap();
        assert_eq!(origin.to_string(), "https://app.example.org");
        assert_eq!(
            Origin::parse("http://localhost:3344").unwrap().to_string(),
            "http://localhost:3344"
        );
        assert_eq!(
            Origin::parse("http://[::1]:8080").unwrap().to_string(),
            "http://[::1]:8080"
        );
        for bad in [
            "localhost:3344",
            "ftp://x",
            "http://",
            "http://x/path",
            "http://u:p@x",
            "http://x:0",
            "http://x:99999",
            "http://x?q",
            "null",
            "*",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_origin_is_the_host_the_request_was_sent_to() {
        let browsers = Browsers::default();
        let judge = |origin, host| browsers.judge(&request(Some(origin), host));
        assert_eq!(
            judge("http://127.0.0.1:3003", "127.0.0.1:3003"),
            Verdict::Same
        );
        assert_eq!(
            judge("https://calls.example", "Calls.Example"),
            Verdict::Same
        );
        assert_eq!(
            judge("https://calls.example", "calls.example:443"),
            Verdict::Same
        );
        assert_eq!(
            judge("http://127.0.0.1:3004", "127.0.0.1:3003"),
            Verdict::Refused("http://127.0.0.1:3004".into())
        );
        assert_eq!(
            judge("http://calls.example:8080", "calls.example"),
            Verdict::Refused("http://calls.example:8080".into())
        );
        assert_eq!(judge("null", "x"), Verdict::Refused("null".into()));
        assert_eq!(browsers.judge(&request(None, "x")), Verdict::Unmarked);
    }

    #[test]
    fn listed_origins_are_let_in_and_others_refused() {
        let browsers = Browsers::new(vec![Origin::parse("https://app.example").unwrap()]);
        assert_eq!(
            browsers.judge(&request(Some("https://app.example"), "api.example")),
            Verdict::Listed(HeaderValue::from_static("https://app.example"))
        );
        assert_eq!(
            browsers.judge(&request(Some("http://app.example"), "api.example")),
            Verdict::Refused("http://app.example".into())
        );
    }
}
