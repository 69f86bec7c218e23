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

/// What a test can make a listener do to its next connections — what a real service does to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionFault {
    /// Close the connection once the server has written this many bytes.
    DropAfterBytes(u64),
    /// Wait this long before each write.
    Delay(Duration),
    /// Close every new connection at once (throttled) for this long.
    Refuse(Duration),
}

/// A listener's injected fault: the next `count` connections get it (a `Refuse` starts its window at the
/// first one).
#[derive(Debug, Default)]
pub struct Faults {
    pending: std::sync::Mutex<Option<(ConnectionFault, u32)>>,
    refusing_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Faults {
    /// Gives the next `count` connections `fault` (replacing any pending one).
    pub fn inject(&self, fault: ConnectionFault, count: u32) {
        *lock(&self.pending) = (count > 0).then_some((fault, count));
    }

    /// Removes any pending fault and ends a refusal window.
    pub fn clear(&self) {
        *lock(&self.pending) = None;
        *lock(&self.refusing_until) = None;
    }

    /// The fault for a new connection: `Err(())` to close it at once.
    fn take(&self) -> Result<Option<ConnectionFault>, ()> {
        let now = tokio::time::Instant::now();
        if lock(&self.refusing_until).is_some_and(|until| now < until) {
            return Err(());
        }
        let mut pending = lock(&self.pending);
        let Some((fault, remaining)) = pending.as_mut() else {
            return Ok(None);
        };
        let fault = *fault;
        *remaining -= 1;
        if *remaining == 0 {
            *pending = None;
        }
        if let ConnectionFault::Refuse(window) = fault {
            *lock(&self.refusing_until) = Some(now + window);
            return Err(());
        }
        Ok(Some(fault))
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A stream with a fault: writes delayed, or cut after a number of bytes (then every write fails).
struct Faulty {
    inner: Stream,
    bytes_left: Option<u64>,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    delayed: bool,
}

impl AsyncRead for Faulty {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Faulty {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        if let Some(delay) = self.delay
            && !self.delayed
        {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
            self.delayed = true;
        }
        let allowed = match self.bytes_left {
            Some(0) => {
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "injected fault: connection dropped",
                )));
            }
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let written = Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]);
        if let Poll::Ready(Ok(n)) = written {
            self.delayed = false;
            if let Some(left) = self.bytes_left.as_mut() {
                *left -= n as u64;
            }
        }
        written
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Starts the accept loop of `listener`; it stops when `shutdown` turns true, then gives connections
/// [`GRACEFUL_SHUTDOWN_TIMEOUT`] to finish.
pub fn spawn_listener(
    listener: TcpListener,
    tls: ListenerTls,
    tls_handshake_timeout: Duration,
    max_connections: usize,
    protocol: Arc<dyn Protocol>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_listener_with_faults(
        listener,
        tls,
        tls_handshake_timeout,
        max_connections,
        protocol,
        shutdown,
        Arc::new(Faults::default()),
    )
}

/// [`spawn_listener`] with injectable [`Faults`] (the sandbox's admin API fills them).
pub fn spawn_listener_with_faults(
    listener: TcpListener,
    tls: ListenerTls,
    tls_handshake_timeout: Duration,
    max_connections: usize,
    protocol: Arc<dyn Protocol>,
    mut shutdown: watch::Receiver<bool>,
    faults: Arc<Faults>,
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
            let fault = match faults.take() {
                Ok(fault) => fault,
                Err(()) => {
                    tracing::info!(%peer, "injected fault: connection refused");
                    drop(tcp);
                    continue;
                }
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
                let stream: Stream = match fault {
                    Some(ConnectionFault::DropAfterBytes(bytes)) => Box::new(Faulty {
                        inner: stream,
                        bytes_left: Some(bytes),
                        delay: None,
                        sleep: None,
                        delayed: false,
                    }),
                    Some(ConnectionFault::Delay(delay)) => Box::new(Faulty {
                        inner: stream,
                        bytes_left: None,
                        delay: Some(delay),
                        sleep: None,
                        delayed: false,
                    }),
                    _ => stream,
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

/// Writes an answer and flushes it, within `timeout`; false when the client did not take it in time (or the
/// connection is gone): the driver then closes the connection.
///
/// The flush matters over TLS: a write hands plaintext to rustls, which sends only what the socket takes at
/// that moment; the rest waits in rustls until the stream is written or flushed again. A driver that then
/// waits for the client's next command would leave the end of a long answer (a FETCH of a few hundred
/// messages) unsent while the client waits for it.
pub async fn write_answer(stream: &mut Stream, bytes: &[u8], timeout: Duration) -> bool {
    use tokio::io::AsyncWriteExt as _;
    let written = tokio::time::timeout(timeout, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await;
    matches!(written, Ok(Ok(())))
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
