//! The listening sockets of the token and management ports: shared with a second `serve
//! --takeover` during an upgrade on one host (SO_REUSEPORT; without `--takeover` a port another
//! process listens on is a startup error, see `startup.rs`), and closed without resetting a connection the kernel
//! has already completed for them (README, "Upgrading without dropping requests").
//!
//! Linux gives each new connection to one of the sockets listening on a port with SO_REUSEPORT
//! (by a hash of the addresses). When one of them closes, the connections in its accept queue
//! are reset, unless `net.ipv4.tcp_migrate_req = 1` (Linux ≥ 5.14, per network namespace)
//! moves them to another listener of the group. So as not to depend on that sysctl,
//! [`close`] first drops new SYNs with a socket filter (the client retransmits its SYN a
//! second later: to another listener of the port, or to a closed port, which a TCP balancer
//! sees as a refused connect and takes elsewhere), keeps accepting while the handshakes
//! already under way finish, then accepts whatever is queued and closes at once.
//!
//! A socket joins the port's group only when it listens: [`bind`] reserves the port (so "port in
//! use" is a startup error) and [`Bound::listen`] is called once start-up can no longer fail,
//! because connections queued to a process that then exits would be reset.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockFilter, SockRef};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long a closing listener keeps accepting after it stopped taking new SYNs: the
/// handshakes it already answered complete within a round trip.
const HANDSHAKE_SETTLE: Duration = Duration::from_millis(500);
/// The kernel's default; what `TcpListener::bind` uses too.
const BACKLOG: u32 = 1024;
/// Where Linux says whether a closing listener's queue moves to another one of its group.
const MIGRATE_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// A socket bound to its address, not yet listening.
pub struct Bound {
    socket: TcpSocket,
    local_addr: SocketAddr,
    shared: bool,
}

/// Binds `addr` with SO_REUSEADDR (a restart does not wait for old connections' TIME_WAIT) and
/// SO_REUSEPORT (a new process may listen beside this one).
pub fn bind(addr: SocketAddr) -> io::Result<Bound> {
    let shared = listening_on(addr);
    let socket = new_socket(addr)?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    let local_addr = socket.local_addr()?;
    Ok(Bound {
        socket,
        local_addr,
        shared,
    })
}

fn new_socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
}

/// Whether a socket already listens on `addr` (another `serve`, or anything else using
/// SO_REUSEPORT under this user, which [`bind`] would share the port with).
pub fn listening_on(addr: SocketAddr) -> bool {
    addr.port() != 0 && another_listener_on(addr)
}

/// Whether a socket already listens on `addr`: a bind with SO_REUSEADDR alone fails only then
/// (TIME_WAIT connections do not stop it).
fn another_listener_on(addr: SocketAddr) -> bool {
    let Ok(probe) = new_socket(addr) else {
        return false;
    };
    if probe.set_reuseaddr(true).is_err() {
        return false;
    }
    matches!(probe.bind(addr), Err(err) if err.kind() == io::ErrorKind::AddrInUse)
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether another socket listened on this address when it was bound: another `serve` (an
    /// upgrade under way), or something else using SO_REUSEPORT.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Starts listening: from now on the kernel gives this socket some of the port's connections.
    pub fn listen(self) -> io::Result<TcpListener> {
        self.socket.listen(BACKLOG)
    }
}

/// `net.ipv4.tcp_migrate_req`: `None` where it cannot be read (not Linux, or before 5.14).
pub fn migrate_requests() -> Option<bool> {
    let value = std::fs::read_to_string(MIGRATE_SYSCTL).ok()?;
    Some(value.trim() != "0")
}

/// Stops `listener` without resetting a connection queued for it (see the module doc).
/// `serve` gets every connection accepted meanwhile.
pub async fn close(listener: TcpListener, mut serve: impl FnMut(TcpStream, SocketAddr)) {
    if let Err(err) = refuse_new_handshakes(&listener) {
        // Then only the sysctl (or luck) saves the connections queued at the close.
        tracing::warn!(error = %err, "cannot stop new connections before closing the listener");
    }
    let settle = tokio::time::sleep(HANDSHAKE_SETTLE);
    let mut settle = std::pin::pin!(settle);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => serve(tcp, peer),
                // Typically EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            () = &mut settle => break,
        }
    }
    // From here to the close nothing awaits, so no connection can complete in between unseen.
    for (tcp, peer) in queued(&listener) {
        serve(tcp, peer);
    }
    drop(listener);
}

/// A classic BPF socket filter that drops segments with SYN set and ACK clear (new
/// connections) and keeps everything else, including the ACKs that complete handshakes
/// already answered. A TCP socket's filter sees the segment from its TCP header on; byte 13
/// holds the flags (RFC 9293 §3.1). Connections accepted afterwards inherit the filter, which
/// lets everything they receive through.
fn refuse_new_handshakes(listener: &TcpListener) -> io::Result<()> {
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let program = [
        SockFilter::new(LD_B_ABS, 0, 0, 13),
        SockFilter::new(AND_K, 0, 0, SYN | ACK),
        // A SYN without ACK: the next instruction (drop); anything else: skip it (keep).
        SockFilter::new(JEQ_K, 0, 1, SYN),
        SockFilter::new(RET_K, 0, 0, 0),
        SockFilter::new(RET_K, 0, 0, u32::MAX),
    ];
    SockRef::from(listener).attach_filter(&program)
}

/// Every connection in `listener`'s accept queue, by `accept(2)` until it would block: tokio's
/// own accept trusts readiness the reactor may not have seen yet.
fn queued(listener: &TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let socket = SockRef::from(listener);
    let mut accepted = Vec::new();
    loop {
        let (connection, peer) = match socket.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                tracing::warn!(error = %err, "accepting the last queued connections failed");
                break;
            }
        };
        let Some(peer) = peer.as_socket() else {
            continue;
        };
        let stream: std::net::TcpStream = connection.into();
        let stream = stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream));
        match stream {
            Ok(stream) => accepted.push((stream, peer)),
            Err(err) => tracing::warn!(error = %err, "a last queued connection was lost"),
        }
    }
    accepted
}
