//! The pid file (`[server] pid_file`): `serve` writes its process id there while it runs, so
//! that `tokengate reload` (and scripts) can signal it. A file naming a live process stops a
//! second `serve` with the same config (with SO_REUSEPORT both would bind, and share the port
//! unnoticed), unless it is started with `--takeover` for an in-place upgrade: then it takes
//! the file, and the old process, stopping, leaves it alone. One naming a process that is gone
//! (a crash, SIGKILL) is stale and replaced.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error(
        "{}: tokengate is already running with this config (pid {pid}); stop it first, start \
         this one with --takeover to replace it (an in-place upgrade), or set [server] pid_file \
         to another file",
        path.display()
    )]
    AlreadyRunning { path: PathBuf, pid: i32 },
    #[error("{}: no pid file: is `tokengate serve` running with this config? ({source})", path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: `{content}` is not a process id", path.display())]
    Invalid { path: PathBuf, content: String },
    #[error("{}: process {pid} is not running (a stale pid file: the server stopped without removing it)", path.display())]
    NotRunning { path: PathBuf, pid: i32 },
    #[error("{}: cannot signal process {pid}: {source}", path.display())]
    Signal {
        path: PathBuf,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}: {source}", path.display())]
    Io {
        path: PathBuf,
        message: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no pid file is configured ([server] pid_file = \"\"), so there is no server to signal"
    )]
    NotConfigured,
}

/// The file while this process owns it; removed when dropped (a clean exit).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// Whether `pid` is a process that exists (EPERM: it exists, owned by someone else).
fn alive(pid: Pid) -> bool {
    match test_kill_process(pid) {
        Ok(()) => true,
        Err(err) => err == rustix::io::Errno::PERM,
    }
}

/// The pid in the file at `path`.
pub fn read(path: &Path) -> Result<i32, PidFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PidFileError::Missing {
                path: path.to_path_buf(),
                source,
            }
        } else {
            PidFileError::Io {
                path: path.to_path_buf(),
                message: "cannot read the pid file",
                source,
            }
        }
    })?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| PidFileError::Invalid {
            path: path.to_path_buf(),
            content: text.trim().chars().take(32).collect(),
        })
}

/// Sends SIGHUP to the process named by the pid file (`tokengate reload`); returns its pid.
pub fn signal_reload(path: &Path) -> Result<i32, PidFileError> {
    let pid = read(path)?;
    let not_running = || PidFileError::NotRunning {
        path: path.to_path_buf(),
        pid,
    };
    let target = Pid::from_raw(pid).ok_or_else(not_running)?;
    match kill_process(target, Signal::HUP) {
        Ok(()) => Ok(pid),
        Err(rustix::io::Errno::SRCH) => Err(not_running()),
        Err(err) => Err(PidFileError::Signal {
            path: path.to_path_buf(),
            pid,
            source: err.into(),
        }),
    }
}

impl PidFile {
    /// Writes this process's id to `path`, unless a live process already holds it and
    /// `takeover` is false.
    pub fn create(path: &Path, takeover: bool) -> Result<Self, PidFileError> {
        let io = |message: &'static str| {
            move |source| PidFileError::Io {
                path: path.to_path_buf(),
                message,
                source,
            }
        };
        let own = std::process::id();
        match read(path) {
            Ok(pid) if u32::try_from(pid).is_ok_and(|pid| pid != own) => {
                if !Pid::from_raw(pid).is_some_and(alive) {
                    tracing::warn!(file = %path.display(), pid, "replacing a stale pid file (that process is gone)");
                } else if takeover {
                    tracing::info!(file = %path.display(), pid, "taking over the pid file from the running server (--takeover); stop it with SIGTERM once this one is ready");
                } else {
                    return Err(PidFileError::AlreadyRunning {
                        path: path.to_path_buf(),
                        pid,
                    });
                }
            }
            Ok(_) | Err(PidFileError::Missing { .. } | PidFileError::Invalid { .. }) => {}
            Err(err) => return Err(err),
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        // 0700 like every folder tokengate creates: by default this is data/, which the SQLite
        // store would otherwise create so, after us.
        crate::secret_files::create_private_dir_all(dir)
            .map_err(io("cannot create the pid file's folder"))?;
        // Written beside it and renamed, so a reader never sees a half-written pid.
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(io("cannot write the pid file"))?;
        writeln!(temp, "{own}").map_err(io("cannot write the pid file"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(io("cannot write the pid file"))?;
        }
        temp.persist(path)
            .map_err(|err| io("cannot write the pid file")(err.error))?;
        Ok(Self {
            path: path.to_path_buf(),
            pid: own,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a newer server may have replaced it meanwhile.
        let ours = read(&self.path).is_ok_and(|pid| u32::try_from(pid) == Ok(self.pid));
        if ours {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::warn!(file = %self.path.display(), error = %err, "cannot remove the pid file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_naming_this_live_process_is_ours_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/tokengate.pid");
        let file = PidFile::create(&path, false).unwrap();
        assert_eq!(
            read(&path).unwrap(),
            i32::try_from(std::process::id()).unwrap()
        );
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn a_stale_pid_is_replaced_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokengate.pid");
        // Above the kernel's pid_max (4194304 at most): never a running process.
        std::fs::write(&path, "99999999\n").unwrap();
        let file = PidFile::create(&path, false).unwrap();
        drop(file);

        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, format!("{}\n", child.id())).unwrap();
        let refused = PidFile::create(&path, false);
        let taken = PidFile::create(&path, true);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            matches!(refused, Err(PidFileError::AlreadyRunning { .. })),
            "{refused:?}"
        );
        assert!(taken.is_ok(), "{taken:?}");
    }
}
