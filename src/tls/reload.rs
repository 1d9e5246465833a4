//! [`ServedCertificate`]: the certificate a listener presents, replaced while it serves.
//!
//! rustls asks it for the certificate of every handshake, so a new pair is used from the next
//! handshake on while open connections keep the one they negotiated. The files are checked
//! every `[stores] reload_interval` (by inode, size and mtime, like the users file) and re-read
//! on SIGHUP. A pair that does not load (bad PEM, a key that does not fit, expired, not yet
//! valid) is refused: the previous one stays, and an error names the files. A certificate
//! within [`EXPIRY_WARNING`] of its end earns a warning when loaded and then once a day.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{load_pair, rfc3339, LoadedPair, TlsError};
use crate::clock::Clock;
use crate::metrics::{ReloadMetrics, TlsListener, TlsMetrics};

/// How close to its end a certificate must be for the warnings to start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// How often the warning repeats while the certificate stays.
const WARNING_EVERY_SECS: i64 = 86_400;

type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp_of(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// The files and what was last seen of them.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    /// The stamps of the pair last tried, good or not (so a bad pair is reported once).
    stamps: (Stamp, Stamp),
    /// `notAfter` of the certificate served.
    not_after: i64,
    /// When the expiry warning was last logged for the certificate served.
    warned_at: Option<i64>,
}

/// Where the handles that tell about a listener's certificate go.
pub struct CertificateReporting {
    pub listener: TlsListener,
    pub clock: Arc<dyn Clock>,
    pub metrics: TlsMetrics,
    pub reloads: ReloadMetrics,
}

/// The certificate of one listener; see the module documentation.
pub struct ServedCertificate {
    current: ArcSwap<CertifiedKey>,
    files: Mutex<Files>,
    listener: TlsListener,
    clock: Arc<dyn Clock>,
    metrics: TlsMetrics,
    reloads: ReloadMetrics,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("listener", &self.listener.as_str())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ServedCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ServedCertificate {
    /// Loads the pair (an error here is a startup error).
    pub fn open(
        cert: &Path,
        key: &Path,
        reporting: CertificateReporting,
    ) -> Result<Arc<Self>, TlsError> {
        let stamps = (stamp_of(cert), stamp_of(key));
        let LoadedPair {
            certified,
            validity,
        } = load_pair(cert, key, reporting.clock.now_secs())?;
        let served = Arc::new(Self {
            current: ArcSwap::new(certified),
            files: Mutex::new(Files {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                stamps,
                not_after: validity.not_after,
                warned_at: None,
            }),
            listener: reporting.listener,
            clock: reporting.clock,
            metrics: reporting.metrics,
            reloads: reporting.reloads,
        });
        served
            .metrics
            .certificate_expires(served.listener, validity.not_after);
        let _ = served.warn_if_expiring(&mut served.lock());
        Ok(served)
    }

    /// Checks the files every `interval` (on the blocking pool) while the listener exists.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        crate::reload::periodically(self, interval, Self::check_files);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Files> {
        // The state is a few plain values, consistent whatever a panicking holder did.
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The periodic check: re-reads the pair if either file changed; repeats the expiry
    /// warning when it is due.
    pub fn check_files(&self) {
        let mut files = self.lock();
        let stamps = (stamp_of(&files.cert), stamp_of(&files.key));
        if stamps != files.stamps {
            let (cert, key) = (files.cert.clone(), files.key.clone());
            // Errors are logged and counted inside.
            let _ = self.replace(&mut files, cert, key, stamps);
        }
        let _ = self.warn_if_expiring(&mut files);
    }

    /// SIGHUP: re-reads the pair whether or not the files changed, from `paths` when given
    /// (the config named other files). On error the served pair and its paths stay.
    pub fn reload(&self, paths: Option<(PathBuf, PathBuf)>) -> Result<(), TlsError> {
        let mut files = self.lock();
        let (cert, key) = paths.unwrap_or_else(|| (files.cert.clone(), files.key.clone()));
        let stamps = (stamp_of(&cert), stamp_of(&key));
        self.replace(&mut files, cert, key, stamps)
    }

    /// The files the served pair was read from.
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        let files = self.lock();
        (files.cert.clone(), files.key.clone())
    }

    fn replace(
        &self,
        files: &mut Files,
        cert: PathBuf,
        key: PathBuf,
        stamps: (Stamp, Stamp),
    ) -> Result<(), TlsError> {
        let listener = self.listener.as_str();
        match load_pair(&cert, &key, self.clock.now_secs()) {
            Ok(LoadedPair {
                certified,
                validity,
            }) => {
                self.current.store(certified);
                *files = Files {
                    cert,
                    key,
                    stamps,
                    not_after: validity.not_after,
                    warned_at: None,
                };
                self.metrics
                    .certificate_expires(self.listener, validity.not_after);
                self.reloads.reloaded(true);
                tracing::info!(
                    listener,
                    cert = %files.cert.display(),
                    key = %files.key.display(),
                    not_after = %rfc3339(validity.not_after),
                    "TLS certificate replaced; new connections get the new one"
                );
                let _ = self.warn_if_expiring(files);
                Ok(())
            }
            Err(err) => {
                if cert == files.cert && key == files.key {
                    files.stamps = stamps;
                }
                self.reloads.reloaded(false);
                tracing::error!(
                    listener,
                    cert = %cert.display(),
                    key = %key.display(),
                    error = %err,
                    "TLS certificate not replaced; still serving the previous one"
                );
                Err(err)
            }
        }
    }

    /// Logs the expiry warning if the certificate is close to its end and none was logged for
    /// it in the last day; `true` if it did.
    fn warn_if_expiring(&self, files: &mut Files) -> bool {
        let now = self.clock.now_secs();
        let left = files.not_after.saturating_sub(now);
        let soon = i64::try_from(EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
        let due = files
            .warned_at
            .is_none_or(|at| now.saturating_sub(at) >= WARNING_EVERY_SECS);
        if left > soon || !due {
            return false;
        }
        files.warned_at = Some(now);
        tracing::warn!(
            listener = self.listener.as_str(),
            cert = %files.cert.display(),
            not_after = %rfc3339(files.not_after),
            days_left = left.div_euclid(86_400),
            "the TLS certificate expires soon; replace its files (they are re-read while serving)"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::metrics::{Metrics, ReloadSource};

    #[test]
    fn the_expiry_warning_repeats_once_a_day_while_the_certificate_stays() {
        // A pair ending 10 days from the clock's start.
        let clock = Arc::new(ManualClock::new(1_800_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        params.not_before = epoch + Duration::from_secs(1_800_000_000 - 86_400);
        params.not_after = epoch + Duration::from_secs(1_800_000_000 + 10 * 86_400);
        let pair = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&cert, params.self_signed(&pair).unwrap().pem()).unwrap();
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        let metrics = Metrics::new(false);
        let served = ServedCertificate::open(
            &cert,
            &key,
            CertificateReporting {
                listener: TlsListener::Https,
                clock: clock.clone(),
                metrics: metrics.tls.clone(),
                reloads: metrics.reloads.of(ReloadSource::Tls),
            },
        )
        .unwrap();
        assert_eq!(served.lock().warned_at, Some(1_800_000_000), "at load");

        clock.advance_secs(86_399);
        assert!(
            !served.warn_if_expiring(&mut served.lock()),
            "not again within the day"
        );
        clock.advance_secs(1);
        assert!(served.warn_if_expiring(&mut served.lock()), "a day later");
    }
}
