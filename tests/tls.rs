//! TLS: HTTPS and Socket.IO over TLS on PORT with the certificate of SSL_CERT_PATH
//! and SSL_KEY_PATH, that certificate swapped while connections stay open (on a file
//! change, and on SIGHUP to the binary), a bad certificate refused at start-up and
//! ignored at reload, and TURN over TLS on the embedded server, driven by coturn's
//! `turnutils_uclient` with the credentials the API minted.
//!
//! The certificates come from a test CA made here (rcgen) in a scratch folder that
//! is removed when the test ends; clients trust that CA and nothing else. The
//! Socket.IO client is the official `socket.io-client` (tests/socketio's packages,
//! driving tests/socketio/tls-peers.mjs); Node, npm and coturn's `turnutils_uclient`
//! are required: without them these tests fail, they do not skip.

mod common;
#[allow(dead_code)] // only its installer is used here
mod node_suite;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use common::{Backend, Harness};

/// How long a reload may take to be seen: SSL_RELOAD_INTERVAL is 1 s in these tests.
const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// A test CA and the server certificates it issues, in a scratch folder removed on
/// drop. The server reads `cert.pem` and `key.pem`; clients trust `ca.pem`.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

/// One server certificate (for 127.0.0.1 and localhost) and its key, as PEM.
#[derive(Clone)]
struct Leaf {
    cert: String,
    key: String,
}

impl Leaf {
    fn der(&self) -> Vec<u8> {
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .expect("a PEM certificate")
            .to_vec()
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("huddle-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("scratch folder");
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "Huddle test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = params.self_signed(&key).expect("CA certificate").pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).expect("write ca.pem");
        Pki {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    /// A new server certificate named `name`, signed by the CA.
    fn issue(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params
            .signed_by(&key, &self.ca)
            .expect("server certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// Writes `leaf` where the server reads its certificate.
    fn install(&self, leaf: &Leaf) {
        std::fs::write(self.cert_path(), &leaf.cert).expect("write cert.pem");
        std::fs::write(self.key_path(), &leaf.key).expect("write key.pem");
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The flags that serve `leaf` (installed now), checking the files every second.
    fn flags(&self) -> Vec<String> {
        [
            "--ssl-cert-path",
            &self.cert_path().to_string_lossy(),
            "--ssl-key-path",
            &self.key_path().to_string_lossy(),
            "--ssl-reload-interval",
            "1",
            "--turn-tls-port",
            "0",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// A TLS client that trusts this CA only.
    fn client(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA PEM"))
            .expect("a CA certificate");
        connector(roots)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connector(roots: RootCertStore) -> TlsConnector {
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` (verified as 127.0.0.1).
async fn handshake(
    addr: SocketAddr,
    client: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    client.connect(ServerName::from(addr.ip()), tcp).await
}

/// The certificate a new TLS connection to `addr` is shown.
async fn served(addr: SocketAddr, client: &TlsConnector) -> Vec<u8> {
    let stream = handshake(addr, client).await.expect("TLS handshake");
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate")[0]
        .to_vec()
}

/// Waits until new connections to `addr` are shown `leaf`.
async fn wait_until_served(addr: SocketAddr, client: &TlsConnector, leaf: &Leaf) {
    let deadline = Instant::now() + RELOAD_WAIT;
    while served(addr, client).await != leaf.der() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {RELOAD_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a STUN Binding request on `stream` (TURN over TLS) and checks that it is
/// answered with a Binding success for the same transaction.
async fn binds(stream: &mut TlsStream<TcpStream>, transaction: u8) {
    // RFC 8489: type Binding request, no attributes, the magic cookie, a transaction id.
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&[transaction; 12]);
    stream
        .write_all(&request)
        .await
        .expect("send a Binding request");
    let mut header = [0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
        .await
        .expect("a Binding answer within 5 s")
        .expect("read the answer");
    let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let mut attributes = vec![0u8; length];
    stream
        .read_exact(&mut attributes)
        .await
        .expect("read the answer");
    assert_eq!(header[..2], [0x01, 0x01], "a Binding success");
    assert_eq!(header[8..], request[8..], "for the request's transaction");
}

/// One HTTPS keep-alive connection (hyper's HTTP/1.1 client over rustls).
struct Https {
    sender: SendRequest<Full<Bytes>>,
    /// The certificate this connection was shown.
    certificate: Vec<u8>,
    addr: SocketAddr,
}

impl Https {
    async fn connect(addr: SocketAddr, client: &TlsConnector) -> Https {
        let stream = handshake(addr, client).await.expect("TLS handshake");
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .expect("a certificate")[0]
            .to_vec();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(connection);
        Https {
            sender,
            certificate,
            addr,
        }
    }

    /// A request on this connection; the JSON answer.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = Full::new(Bytes::from(body.to_string()));
        // The previous response read, the connection may still be finishing it.
        self.sender
            .ready()
            .await
            .expect("the open connection takes another request");
        let response = self
            .sender
            .send_request(request.body(body).expect("request"))
            .await
            .expect("a response on the open connection");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, json)
    }

    async fn health(&mut self) -> StatusCode {
        self.send(Method::GET, "/health", None, Value::Null).await.0
    }
}

async fn tls_harness(pki: &Pki, extra: &[&str]) -> Harness {
    let flags = pki.flags();
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Harness::start_with(Backend::Sqlite, &args).await
}

/// tests/socketio/tls-peers.mjs running, killed when dropped; its stdout by lines.
struct NodePeers {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl NodePeers {
    fn start(url: &str, ca: &Path, tokens: [String; 3]) -> NodePeers {
        node_suite::install("socketio", &["socket.io-client"]);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/socketio");
        let mut child = Command::new("node")
            .arg("tls-peers.mjs")
            .arg(url)
            .arg(ca)
            .args(tokens)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("node is required for Socket.IO over TLS: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        NodePeers {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next JSON line the script prints.
    async fn report(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.recv())
            .await
            .expect("tls-peers.mjs reports within 30 s")
            .expect("tls-peers.mjs failed: its stderr is above");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Lets the script go on past its first report.
    fn go_on(&mut self) {
        let mut stdin = self.stdin.take().expect("told once");
        stdin.write_all(b"go\n").expect("write to node");
    }

    /// Waits for the script to exit; its status.
    async fn finish(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "tls-peers.mjs did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for NodePeers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_with_the_certificate_and_nothing_in_plain_http() {
    let pki = Pki::new();
    let leaf = pki.issue("first");
    pki.install(&leaf);
    let h = tls_harness(&pki, &[]).await;
    let mut https = Https::connect(h.addr(), &pki.client()).await;
    assert_eq!(https.certificate, leaf.der());
    assert_eq!(https.health().await, StatusCode::OK);
    let (status, body) = https
        .send(
            Method::POST,
            "/api/v1/calls/start",
            Some(&h.token("alice")),
            json!({ "type": "audio", "participantIds": ["bob"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Bad input over TLS is answered as over plain HTTP.
    let (status, body) = https
        .send(
            Method::POST,
            "/api/v1/calls/start",
            Some(&h.token("alice")),
            json!({ "type": "hologram" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["success"], false, "{body}");

    // A client that does not trust the test CA is refused the handshake by its own
    // checks: the certificate really is the CA's.
    let stranger = connector(RootCertStore::empty());
    let refused = handshake(h.addr(), &stranger).await;
    assert!(refused.is_err(), "an untrusted certificate was accepted");

    // Plain HTTP on the port gets no HTTP answer.
    let mut plain = TcpStream::connect(h.addr()).await.expect("connect");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(https);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_socketio_and_turn_over_tls_keep_their_connections_across_a_certificate_swap() {
    let pki = Pki::new();
    let first = pki.issue("first");
    pki.install(&first);
    let h = tls_harness(&pki, &[]).await;
    let client = pki.client();
    let mut kept = Https::connect(h.addr(), &client).await;
    assert_eq!(kept.certificate, first.der());
    assert_eq!(kept.health().await, StatusCode::OK);

    let url = format!("https://127.0.0.1:{}", h.addr().port());
    let tokens = ["alice", "bob", "carol"].map(|user| h.token(user));
    let mut peers = NodePeers::start(&url, &pki.ca_path(), tokens);
    let before = peers.report().await;
    assert_eq!(before["invited"], true, "{before}");
    assert_eq!(before["rang"], before["callId"], "{before}");
    assert_eq!(
        before["transports"],
        json!(["websocket", "polling"]),
        "{before}"
    );
    let tls_port = h
        .server
        .state
        .turn
        .as_ref()
        .and_then(|turn| turn.tls_local_addr())
        .expect("TURN over TLS runs")
        .port();
    assert!(
        before["iceServers"][1]["urls"]
            .as_array()
            .expect("TURN URLs")
            .contains(&json!(format!("turns:127.0.0.1:{tls_port}?transport=tcp"))),
        "{before}"
    );

    let turn_tls = SocketAddr::from(([127, 0, 0, 1], tls_port));
    let mut turn = handshake(turn_tls, &client).await.expect("TURN over TLS");
    binds(&mut turn, 1).await;

    // Renewed: a new certificate from the same CA. New connections get it, on HTTPS
    // and TURN over TLS alike...
    let second = pki.issue("second");
    pki.install(&second);
    wait_until_served(h.addr(), &client, &second).await;
    assert_eq!(served(turn_tls, &client).await, second.der());
    // ...while those open before go on: HTTPS keep-alive, TURN over TLS, and
    // Socket.IO over WSS and over HTTPS long-polling.
    assert_eq!(kept.health().await, StatusCode::OK);
    binds(&mut turn, 2).await;
    peers.go_on();
    let after = peers.report().await;
    assert_eq!(after["accepted"], true, "{after}");
    assert_eq!(after["state"], "connected", "{after}");
    assert_eq!(after["heardBy"], "bob", "{after}");
    assert_eq!(after["stillConnected"], json!([true, true]), "{after}");
    assert_eq!(
        after["transports"],
        json!(["websocket", "polling"]),
        "{after}"
    );
    assert_eq!(after["carolConnected"], true, "{after}");
    assert!(peers.finish().await.success());

    // A certificate that cannot be used is not swapped in: the last good one stays.
    std::fs::write(
        pki.cert_path(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write cert.pem");
    let tls = h.server.tls().expect("TLS is on");
    assert!(tls.reload().is_err());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(served(h.addr(), &client).await, second.der());
    assert_eq!(kept.health().await, StatusCode::OK);
    h.finish().await;
}

/// Runs turnutils_uclient over TLS (`-S`, TCP under it) against 127.0.0.1:`port`,
/// checking the server's certificate against the test CA (`-E`): two clients
/// relaying 20 messages each to one another.
async fn uclient_over_tls(
    pki: &Pki,
    port: u16,
    username: &str,
    password: &str,
) -> std::process::Output {
    let mut command = tokio::process::Command::new("turnutils_uclient");
    command
        .args(["-t", "-S", "-y", "-n", "20", "-m", "2", "-l", "170", "-X"])
        .arg("-E")
        .arg(pki.ca_path())
        .args(["-p", &port.to_string(), "-u", username, "-w", password])
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let child = command.output();
    tokio::time::timeout(Duration::from_secs(40), child)
        .await
        .expect("turnutils_uclient finishes within 40 s")
        .unwrap_or_else(|e| {
            panic!("turnutils_uclient does not run ({e}): apt-get install -y coturn")
        })
}

fn transcript(out: &std::process::Output) -> String {
    format!(
        "exit {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turnutils_uclient_relays_over_turn_over_tls_with_minted_credentials() {
    let pki = Pki::new();
    let leaf = pki.issue("turn");
    pki.install(&leaf);
    // uclient's two clients relay to each other's loopback relay addresses.
    let h = tls_harness(
        &pki,
        &[
            "--turn-allowed-peers",
            "127.0.0.0/8",
            "--turn-min-port",
            "53000",
            "--turn-max-port",
            "53099",
        ],
    )
    .await;
    let turn = h
        .server
        .state
        .turn
        .clone()
        .expect("the embedded TURN server runs");
    let tls = turn.tls_local_addr().expect("TURN over TLS runs");
    assert_ne!(tls.port(), turn.local_addr().port());
    // The same certificate as HTTPS.
    assert_eq!(served(tls, &pki.client()).await, leaf.der());

    let call = {
        let mut https = Https::connect(h.addr(), &pki.client()).await;
        let (status, body) = https
            .send(
                Method::POST,
                "/api/v1/calls/start",
                Some(&h.token("alice")),
                json!({ "type": "video", "participantIds": ["bob"] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    };
    let turn_server = &call["iceServers"][1];
    let at = format!("127.0.0.1:{}", turn.local_addr().port());
    assert_eq!(
        turn_server["urls"],
        json!([
            format!("turn:{at}?transport=udp"),
            format!("turn:{at}?transport=tcp"),
            format!("turns:127.0.0.1:{}?transport=tcp", tls.port()),
        ]),
        "{call}"
    );
    let username = turn_server["username"].as_str().expect("a minted username");
    let password = turn_server["credential"]
        .as_str()
        .expect("a minted password");

    let out = uclient_over_tls(&pki, tls.port(), username, password).await;
    assert!(out.status.success(), "uclient failed: {}", transcript(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Total lost packets 0"),
        "{}",
        transcript(&out)
    );
    let stats = turn.stats().await;
    assert!(stats.relayed_packets >= 80, "{stats:?}");
    assert!(stats.allocations_created >= 2, "{stats:?}");

    // Forged credentials are refused over TLS as over UDP.
    let refused = uclient_over_tls(&pki, tls.port(), username, "not-the-password").await;
    assert_eq!(refused.status.code(), Some(255), "{}", transcript(&refused));
    h.finish().await;
}

/// The binary with `env`, its stderr going to `log`.
fn huddle(dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_huddle"));
    command
        .current_dir(dir)
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .env("SFU_HOST", "127.0.0.1")
        .env("SFU_PORT", "0")
        .env("TURN_HOST", "127.0.0.1")
        .env("TURN_PORT", "0")
        .env("TURN_TLS_PORT", "0")
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("huddle.db").display()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

#[test]
fn a_certificate_that_cannot_be_used_stops_start_up_and_huddle_check_with_one_line() {
    let pki = Pki::new();
    let leaf = pki.issue("first");
    let other = pki.issue("other");
    let (cert, key) = (pki.cert_path(), pki.key_path());
    let files = [
        ("SSL_CERT_PATH", cert.to_str().unwrap()),
        ("SSL_KEY_PATH", key.to_str().unwrap()),
    ];
    let cases: [(&str, Option<Leaf>, &str); 3] = [
        ("a missing file", None, "SSL_CERT_PATH"),
        (
            "a key of another certificate",
            Some(Leaf {
                key: other.key.clone(),
                ..leaf.clone()
            }),
            "SSL_KEY_PATH",
        ),
        (
            "no key",
            Some(Leaf {
                key: leaf.cert.clone(),
                ..leaf.clone()
            }),
            "SSL_KEY_PATH",
        ),
    ];
    for (case, files_hold, setting) in cases {
        let _ = std::fs::remove_file(&cert);
        if let Some(files_hold) = &files_hold {
            pki.install(files_hold);
        }
        for command in [None, Some("check")] {
            let out = huddle(&pki.dir, &files)
                .args(command)
                .stderr(Stdio::piped())
                .output()
                .expect("run huddle");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{case}, huddle {command:?}: {stderr}");
            assert_eq!(out.status.code(), Some(2), "{what}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{what}");
            assert!(
                stderr.starts_with(&format!("huddle: {setting}: ")),
                "{what}"
            );
        }
    }
    assert!(!pki.dir.join("huddle.db").exists(), "nothing was started");
    pki.install(&leaf);
    let checked = huddle(&pki.dir, &files)
        .arg("check")
        .output()
        .expect("run huddle check");
    assert!(checked.status.success(), "{checked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_of_the_running_binary() {
    let pki = Pki::new();
    let first = pki.issue("first");
    pki.install(&first);
    let (cert, key) = (pki.cert_path(), pki.key_path());
    // Files are looked at on SIGHUP only.
    let env = [
        ("SSL_CERT_PATH", cert.to_str().unwrap()),
        ("SSL_KEY_PATH", key.to_str().unwrap()),
        ("SSL_RELOAD_INTERVAL", "0"),
        ("JWT_SECRET", common::SECRET),
    ];
    let log = pki.dir.join("huddle.log");
    let mut child = huddle(&pki.dir, &env)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn huddle");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(&mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr: SocketAddr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .split(" addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
        {
            break addr.parse().expect("an address");
        }
        assert!(Instant::now() < deadline, "huddle did not start:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let client = pki.client();
    let mut kept = Https::connect(addr, &client).await;
    assert_eq!(kept.certificate, first.der());

    let second = pki.issue("second");
    pki.install(&second);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        served(addr, &client).await,
        first.der(),
        "no SIGHUP yet, no reload"
    );
    let hup = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    wait_until_served(addr, &client, &second).await;
    assert_eq!(kept.health().await, StatusCode::OK);
    assert!(
        child.0.try_wait().expect("wait").is_none(),
        "SIGHUP stopped huddle"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("TLS certificate reloaded"), "{text}");
}
