//! TLS for the HTTP port (HTTPS and WSS) and for TURN over TLS: the certificate and
//! key of SSL_CERT_PATH and SSL_KEY_PATH, as PEM files, behind one rustls certificate
//! resolver that both listeners share. A reload swaps the resolver's certificate:
//! handshakes from then on use the new one, while connections already open keep the
//! session they have (nothing is dropped). Reloads come from SIGHUP (`main`) and
//! from [`Certificates::watch`], which notices the files' modification times change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// A certificate or key that cannot be used. Its text starts with the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{setting}: cannot read {path}: {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SSL_CERT_PATH: {path} holds no PEM certificate ({detail})")]
    NoCertificate { path: PathBuf, detail: String },
    #[error("SSL_KEY_PATH: {path} holds no PEM private key ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("SSL_KEY_PATH: {path} does not go with the certificate of SSL_CERT_PATH: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
}

/// The PEM files of SSL_CERT_PATH and SSL_KEY_PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain: the server's certificate first, then intermediates.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The certificate in use, and how to replace it.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// What handshakes present. A std lock: held for a clone, never across an await.
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last read, good or bad: a change means
    /// they were written again. A std lock, never held across an await.
    read_at: Mutex<Option<[SystemTime; 2]>>,
}

impl Certificates {
    /// Loads the files; a server must not start without a usable certificate.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let read_at = modified(&files);
        let key = certified_key(&files, &provider)?;
        Ok(Arc::new(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            read_at: Mutex::new(read_at),
        }))
    }

    /// Reads the files again. On success new handshakes present what they hold; on
    /// failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let read_at = modified(&self.files);
        *self.read_at.lock().unwrap_or_else(|e| e.into_inner()) = read_at;
        let key = certified_key(&self.files, &self.provider)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads, logging the outcome: a certificate that cannot be used is an error
    /// in the log and changes nothing.
    pub fn reload_and_log(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.files.cert.display(),
                why,
                "TLS certificate reloaded: new connections use it"
            ),
            Err(e) => tracing::error!(
                error = %e,
                why,
                "TLS certificate not reloaded: the one in use stays"
            ),
        }
    }

    /// Checks the files' modification times every `every` until `stop` turns true,
    /// and reloads when they change. The times are taken before the files are read,
    /// so a file still being written when read is read again once it is finished.
    pub async fn watch(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => return,
                _ = ticks.tick() => {}
            }
            let seen = *self.read_at.lock().unwrap_or_else(|e| e.into_inner());
            if modified(&self.files) != seen {
                self.reload_and_log("the files changed");
            }
        }
    }

    /// rustls settings for HTTPS: HTTP/1.1 (Huddle serves nothing else).
    pub fn https(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = self.server_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// rustls settings for TURN over TLS (no ALPN: TURN clients rarely send one).
    pub fn turn(self: &Arc<Self>) -> Arc<ServerConfig> {
        Arc::new(self.server_config())
    }

    fn server_config(self: &Arc<Self>) -> ServerConfig {
        ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Both files' modification times (following symbolic links, as certbot's `live/`
/// and Kubernetes' secret volumes use), or `None` if either cannot be read.
fn modified(files: &TlsFiles) -> Option<[SystemTime; 2]> {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some([time(&files.cert)?, time(&files.key)?])
}

/// The chain and key of `files`, checked to belong together.
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |setting, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            setting,
            path: path.to_owned(),
            source,
        })
    };
    let pem = read("SSL_CERT_PATH", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
        .and_then(|chain| match chain.is_empty() {
            true => Err("no CERTIFICATE section".to_owned()),
            false => Ok(chain),
        })
        .map_err(|detail| TlsError::NoCertificate {
            path: files.cert.clone(),
            detail,
        })?;
    let key = PrivateKeyDer::from_pem_slice(&read("SSL_KEY_PATH", &files.key)?).map_err(|e| {
        TlsError::NoKey {
            path: files.key.clone(),
            detail: e.to_string(),
        }
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.pem(), signing_key.serialize_pem())
    }

    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch() -> (Scratch, TlsFiles) {
        let dir = std::env::temp_dir().join(format!("huddle-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        (Scratch(dir), files)
    }

    fn write(files: &TlsFiles, (cert, key): &(String, String)) {
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    }

    fn served(certificates: &Certificates) -> Vec<u8> {
        certificates.current.read().unwrap().cert[0].to_vec()
    }

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn files_that_are_not_a_matching_certificate_and_key_are_refused_naming_the_setting() {
        let (_dir, files) = scratch();
        let missing = Certificates::load(files.clone()).unwrap_err().to_string();
        assert!(
            missing.starts_with("SSL_CERT_PATH: cannot read"),
            "{missing}"
        );
        let (cert, key) = self_signed("a.example");
        write(&files, &("not a certificate".into(), key.clone()));
        let garbage = Certificates::load(files.clone()).unwrap_err().to_string();
        assert!(garbage.starts_with("SSL_CERT_PATH:"), "{garbage}");
        assert!(garbage.contains("no PEM certificate"), "{garbage}");
        write(&files, &(cert.clone(), cert.clone()));
        let no_key = Certificates::load(files.clone()).unwrap_err().to_string();
        assert!(no_key.starts_with("SSL_KEY_PATH:"), "{no_key}");
        let (_, other_key) = self_signed("b.example");
        write(&files, &(cert, other_key));
        let mismatch = Certificates::load(files).unwrap_err().to_string();
        assert!(mismatch.starts_with("SSL_KEY_PATH:"), "{mismatch}");
        assert!(mismatch.contains("does not go with"), "{mismatch}");
    }

    #[test]
    fn a_reload_swaps_in_a_good_certificate_and_keeps_the_old_one_over_a_bad_one() {
        let (_dir, files) = scratch();
        let first = self_signed("first.example");
        write(&files, &first);
        let certificates = Certificates::load(files.clone()).unwrap();
        assert_eq!(served(&certificates), der(&first.0));
        let second = self_signed("second.example");
        write(&files, &second);
        certificates.reload().unwrap();
        assert_eq!(served(&certificates), der(&second.0));
        std::fs::write(&files.key, "-----BEGIN PRIVATE KEY-----\nAAAA\n").unwrap();
        assert!(certificates.reload().is_err());
        assert_eq!(served(&certificates), der(&second.0));
    }

    #[tokio::test]
    async fn the_watcher_reloads_when_the_files_are_written_again() {
        let (_dir, files) = scratch();
        let first = self_signed("first.example");
        write(&files, &first);
        let certificates = Certificates::load(files.clone()).unwrap();
        let (stop, stopped) = watch::channel(false);
        let every = Duration::from_millis(20);
        let watcher = tokio::spawn(certificates.clone().watch(every, stopped));
        tokio::time::sleep(every * 5).await;
        assert_eq!(served(&certificates), der(&first.0), "nothing changed yet");
        let second = self_signed("second.example");
        write(&files, &second);
        // A modification time of its own, whatever the file system's resolution.
        let later = SystemTime::now() + Duration::from_secs(1);
        for path in [&files.cert, &files.key] {
            std::fs::File::options()
                .append(true)
                .open(path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        for _ in 0..100 {
            if served(&certificates) == der(&second.0) {
                break;
            }
            tokio::time::sleep(every).await;
        }
        assert_eq!(served(&certificates), der(&second.0));
        stop.send(true).unwrap();
        watcher.await.unwrap();
    }
}
