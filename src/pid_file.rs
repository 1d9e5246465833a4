//! The pid file (`[server] pid_file`): `serve` writes its process id there once it listens, and
//! holds a write lock (a POSIX record lock, `fcntl(F_SETLK)`) on it for its whole life, so that
//! `tokengate reload` (and scripts) can signal it.
//!
//! The lock, not the number in the file, says whether a server runs: the kernel drops it when
//! the process ends, however it ends, and names the process that holds it (`F_GETLK`). A file
//! nobody holds is stale whatever pid it names (after a crash that pid may belong to another
//! process by now) and is replaced. One held by another process stops a second `serve` with the
//! same config, unless it is started with `--takeover` for an in-place upgrade: then it puts
//! its own file in place once it listens and stops the old holder (SIGTERM), which, stopping,
//! leaves the new file alone. `tokengate reload` signals only the process the kernel names as
//! the holder, and only when the file names that process too.
//!
//! A POSIX lock belongs to the process and is released when the process closes *any*
//! descriptor of the file: the server never opens the file again while it holds it.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rustix::fs::{fcntl_lock, FlockOperation};
use rustix::process::{fcntl_getlk, kill_process, Flock, FlockOffsetType, FlockType, Pid, Signal};

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
    #[error(
        "{}: no tokengate server holds this pid file, so it is stale (it names {named}, which is \
         not running tokengate: the server stopped without removing it); nothing was signalled",
        path.display()
    )]
    NotRunning { path: PathBuf, named: String },
    #[error(
        "{}: the pid file is held by process {holder}, but names {named}; not signalling either \
         (was the file edited by hand?)",
        path.display()
    )]
    Mismatch {
        path: PathBuf,
        holder: i32,
        named: String,
    },
    #[error(
        "{}: the pid file is locked by a process this one cannot name (another pid namespace, \
         or an open-file-description lock); nothing was signalled",
        path.display()
    )]
    UnknownHolder { path: PathBuf },
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

/// The file while this process owns it: open (so locked) until dropped, then removed if it is
/// still this one (a clean exit; a server that took over has put its own in place).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// Holds the lock; never closed before the end.
    file: File,
    /// The server this one took the file over from (`--takeover`), if one held it.
    previous: Option<Pid>,
}

/// Who holds the lock on the file at `path`, as the kernel says: `Ok(None)` when nobody does.
/// `Some(None)`: locked, by a process whose pid cannot be told (see `UnknownHolder`).
fn lock_holder(path: &Path) -> Result<Option<Option<Pid>>, PidFileError> {
    let file = File::open(path).map_err(|source| open_error(path, source))?;
    let whole_file = Flock {
        start: 0,
        length: 0,
        pid: None,
        typ: FlockType::WriteLock,
        offset_type: FlockOffsetType::Set,
    };
    let lock = fcntl_getlk(&file, &whole_file).map_err(|err| PidFileError::Io {
        path: path.to_path_buf(),
        message: "cannot tell whether a server holds the pid file",
        source: err.into(),
    })?;
    // An open-file-description lock reports pid -1: never a process to signal (kill(-1) would
    // reach every process).
    // Only a write lock is a server's: anyone who can read the file can hold a read lock.
    Ok(lock
        .filter(|lock| lock.typ == FlockType::WriteLock)
        .map(|lock| lock.pid.filter(|pid| pid.as_raw_nonzero().get() > 0)))
}

fn open_error(path: &Path, source: std::io::Error) -> PidFileError {
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
}

/// The pid in the file at `path` (what it says; whether that process is the server is the
/// lock's to tell).
pub fn read(path: &Path) -> Result<i32, PidFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| open_error(path, source))?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| PidFileError::Invalid {
            path: path.to_path_buf(),
            content: text.trim().chars().take(32).collect(),
        })
}

/// What the file at `path` names, for messages.
fn named(path: &Path) -> String {
    match read(path) {
        Ok(pid) => format!("pid {pid}"),
        Err(PidFileError::Invalid { content, .. }) => format!("`{content}`"),
        Err(_) => "nothing readable".to_owned(),
    }
}

/// Before anything is built: stops a second `serve` while a server holds the file (unless
/// `takeover`). The file itself is left as it is until this server listens
/// ([`PidFile::create`]), so a start that fails changes nothing.
pub fn check(path: &Path, takeover: bool) -> Result<(), PidFileError> {
    match lock_holder(path) {
        Err(PidFileError::Missing { .. }) | Ok(None) => Ok(()),
        Ok(Some(_)) if takeover => Ok(()),
        Ok(Some(holder)) => Err(PidFileError::AlreadyRunning {
            path: path.to_path_buf(),
            pid: Pid::as_raw(holder),
        }),
        Err(err) => Err(err),
    }
}

/// Sends SIGHUP to the server holding the pid file (`tokengate reload`); returns its pid.
/// Only a process the kernel names as the lock's holder is signalled, and only when the file
/// names it too: a stale file, or one edited to name another process, signals nothing.
pub fn signal_reload(path: &Path) -> Result<i32, PidFileError> {
    let holder = match lock_holder(path)? {
        None => {
            return Err(PidFileError::NotRunning {
                path: path.to_path_buf(),
                named: named(path),
            })
        }
        Some(None) => {
            return Err(PidFileError::UnknownHolder {
                path: path.to_path_buf(),
            })
        }
        Some(Some(holder)) => holder,
    };
    let pid = holder.as_raw_nonzero().get();
    if read(path).ok() != Some(pid) {
        return Err(PidFileError::Mismatch {
            path: path.to_path_buf(),
            holder: pid,
            named: named(path),
        });
    }
    kill_process(holder, Signal::HUP).map_err(|err| PidFileError::Signal {
        path: path.to_path_buf(),
        pid,
        source: err.into(),
    })?;
    Ok(pid)
}

impl PidFile {
    /// Puts a file naming this process at `path` and locks it; called once the server
    /// listens. Refused while another process holds the file, unless `takeover`: then that
    /// process is [`PidFile::previous`]. A file nobody holds is stale and replaced.
    pub fn create(path: &Path, takeover: bool) -> Result<Self, PidFileError> {
        let io = |message: &'static str| {
            move |source| PidFileError::Io {
                path: path.to_path_buf(),
                message,
                source,
            }
        };
        let own = std::process::id();
        let previous = match lock_holder(path) {
            Err(PidFileError::Missing { .. }) => None,
            Ok(None) => {
                tracing::warn!(file = %path.display(), named = %named(path), "replacing a stale pid file (no server holds it)");
                None
            }
            Ok(Some(holder)) if takeover => {
                let pid = Pid::as_raw(holder);
                tracing::info!(file = %path.display(), pid, "taking over the pid file from the running server (--takeover)");
                holder.filter(|pid| u32::try_from(pid.as_raw_nonzero().get()) != Ok(own))
            }
            Ok(Some(holder)) => {
                return Err(PidFileError::AlreadyRunning {
                    path: path.to_path_buf(),
                    pid: Pid::as_raw(holder),
                })
            }
            Err(err) => return Err(err),
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        // 0700 like every folder tokengate creates: by default this is data/, which the SQLite
        // store would otherwise create so, after us.
        crate::secret_files::create_private_dir_all(dir)
            .map_err(io("cannot create the pid file's folder"))?;
        // Written and locked beside it, then renamed: a reader never sees a half-written pid,
        // and the file is locked from the moment it is at `path`.
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(io("cannot write the pid file"))?;
        fcntl_lock(temp.as_file(), FlockOperation::NonBlockingLockExclusive)
            .map_err(|err| io("cannot lock the pid file")(err.into()))?;
        writeln!(temp, "{own}").map_err(io("cannot write the pid file"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o644))
                .map_err(io("cannot write the pid file"))?;
        }
        let file = temp
            .persist(path)
            .map_err(|err| io("cannot write the pid file")(err.error))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            previous,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The server that held the file before this one took it over (`--takeover`).
    pub fn previous(&self) -> Option<i32> {
        self.previous.map(|pid| pid.as_raw_nonzero().get())
    }

    /// Whether `path` is still this file (not one a newer server put in its place). `stat`,
    /// not `open`: closing a descriptor of the file would release the lock.
    fn still_ours(&self) -> bool {
        match (rustix::fs::stat(&self.path), rustix::fs::fstat(&self.file)) {
            (Ok(there), Ok(ours)) => there.st_dev == ours.st_dev && there.st_ino == ours.st_ino,
            _ => false,
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a newer server may have replaced it meanwhile.
        if self.still_ours() {
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
    fn a_file_naming_this_process_is_ours_and_removed_on_drop() {
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
    fn a_file_naming_a_live_process_that_holds_no_lock_is_stale_replaced_and_never_signalled() {
        // Arrange: the pid of a live process that is not tokengate (as after a crash and pid
        // reuse), in a file nobody holds.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokengate.pid");
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::write(&path, format!("{}\n", sleep.id())).unwrap();

        // Act
        let signalled = signal_reload(&path);
        let checked = check(&path, false);
        let created = PidFile::create(&path, false);

        // Assert: nothing signalled (the sleep still runs), and the file replaced.
        let still_running = sleep.try_wait().unwrap().is_none();
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert!(
            matches!(signalled, Err(PidFileError::NotRunning { .. })),
            "{signalled:?}"
        );
        assert!(still_running, "the unrelated process was signalled");
        assert!(checked.is_ok(), "{checked:?}");
        let created = created.unwrap();
        assert_eq!(created.previous(), None);
        assert_eq!(
            read(&path).unwrap(),
            i32::try_from(std::process::id()).unwrap()
        );
    }

    #[test]
    fn a_file_replaced_by_a_newer_server_is_left_alone_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokengate.pid");
        let file = PidFile::create(&path, false).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "12345\n").unwrap();
        drop(file);
        assert_eq!(read(&path).unwrap(), 12345);
    }
}
