//! m365mail-server: the accept loop every m365mail server uses — the sandbox's services today, the local
//! bridge's (IMAP, POP3, SMTP for password-only clients) next — not tied to HTTP, and the bounds every
//! service facing untrusted clients keeps ([`MailLimits`]).
//!
//! The accept loop: it accepts TCP connections on one
//! listener, runs each in its own task, does the TLS handshake for implicit-TLS listeners (bounded by the
//! handshake timeout, inside the connection's task so a stalled handshake never delays other clients), and
//! hands the connection to the listener's [`Protocol`] — with the TLS acceptor, for a protocol that upgrades
//! in-band (IMAP `STARTTLS`, POP3 `STLS`, SMTP `STARTTLS`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

/// On shutdown, connections get this long to finish.
pub const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream: plain TCP or TLS over TCP.
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A boxed connection stream.
pub type Stream = Box<dyn AsyncStream>;

/// How a listener secures its connections.
#[derive(Clone)]
pub enum ListenerTls {
    /// Plain text (HTTP with `--http`; a mail protocol that never offers STARTTLS).
    Plain,
    /// TLS from the first byte (HTTPS, IMAPS 993, POP3S 995, SMTPS 465).
    Implicit(TlsAcceptor),
    /// Plain first; the protocol upgrades with the acceptor when the client asks (STARTTLS, STLS).
    /// The sandbox's plain IMAP listener uses it (and POP3 STLS, SMTP STARTTLS as they land).
    Starttls(TlsAcceptor),
}

/// One accepted connection, ready for its protocol.
pub struct Connection {
    /// The stream (already TLS for an implicit-TLS listener).
    pub stream: Stream,
    /// The client's address.
    pub peer: SocketAddr,
    /// The acceptor for an in-band upgrade, on a STARTTLS listener.
    pub starttls: Option<TlsAcceptor>,
    /// Turns true when the sandbox shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// A protocol served on a listener.
pub trait Protocol: Send + Sync + 'static {
    /// Serves one connection to its end.
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Starts the accept loop of `listener`; it stops when `shutdown` turns true, then gives connections
/// [`GRACEFUL_SHUTDOWN_TIMEOUT`] to finish.
pub fn spawn_listener(
    listener: TcpListener,
    tls: ListenerTls,
    tls_handshake_timeout: Duration,
    max_connections: usize,
    protocol: Arc<dyn Protocol>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    // A connection over the cap is closed at once: clients that never leave cannot exhaust the sandbox.
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut shutdown) => break,
            };
            let Ok((tcp, peer)) = accepted else {
                // Accept errors (e.g. too many open files) are transient; keep serving.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                tracing::warn!(%peer, max_connections, "connection cap reached; connection closed");
                drop(tcp);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let protocol = Arc::clone(&protocol);
            let tls = tls.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                let _slot = slot;
                let (stream, starttls): (Stream, _) = match tls {
                    ListenerTls::Plain => (Box::new(tcp), None),
                    ListenerTls::Starttls(acceptor) => (Box::new(tcp), Some(acceptor)),
                    ListenerTls::Implicit(acceptor) => {
                        let handshake =
                            tokio::time::timeout(tls_handshake_timeout, acceptor.accept(tcp)).await;
                        match handshake {
                            Ok(Ok(tls_stream)) => (Box::new(tls_stream), None),
                            _ => return,
                        }
                    }
                };
                protocol
                    .serve(Connection {
                        stream,
                        peer,
                        starttls,
                        shutdown,
                    })
                    .await;
            });
            // Reap finished connection tasks so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
        let _ = tokio::time::timeout(GRACEFUL_SHUTDOWN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        connections.abort_all();
    })
}

/// Completes once shutdown was requested (or the sandbox handle is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` must not live across an await point (it is not `Send`).
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Bounds of a mail service facing clients that may misbehave: a cap on connections, a deadline for each
/// command, a write timeout. The accept loop enforces the cap; each protocol driver the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailLimits {
    /// Connections at once per listener; one more is closed as soon as it is accepted. Default 500.
    pub max_connections: usize,
    /// A client must complete a command within this long of the previous answer (or of the greeting):
    /// a connection idle this long — or trickling bytes that never make a command — is closed. Default
    /// 10 minutes, Exchange's idle limit.
    pub command_timeout: Duration,
    /// Writing an answer may take this long; a client that stops reading is closed. Default 30 seconds.
    pub write_timeout: Duration,
}

impl Default for MailLimits {
    fn default() -> Self {
        Self {
            max_connections: 500,
            command_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
        }
    }
}
