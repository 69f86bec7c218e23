//! The accept loop every sandbox service uses, not tied to HTTP: it accepts TCP connections on one
//! listener, runs each in its own task, does the TLS handshake for implicit-TLS listeners (bounded by the
//! handshake timeout, inside the connection's task so a stalled handshake never delays other clients), and
//! hands the connection to the listener's [`Protocol`] — with the TLS acceptor, for a protocol that upgrades
//! in-band (IMAP `STARTTLS`, POP3 `STLS`, SMTP `STARTTLS`).

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

/// On shutdown, connections get this long to finish.
pub(crate) const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream: plain TCP or TLS over TCP.
pub(crate) trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// A boxed connection stream.
pub(crate) type Stream = Box<dyn AsyncStream>;

/// How a listener secures its connections.
#[derive(Clone)]
pub(crate) enum ListenerTls {
    /// Plain text (HTTP with `--http`; a mail protocol that never offers STARTTLS).
    Plain,
    /// TLS from the first byte (HTTPS, IMAPS 993, POP3S 995, SMTPS 465).
    Implicit(TlsAcceptor),
    /// Plain first; the protocol upgrades with the acceptor when the client asks (STARTTLS, STLS).
    /// Tested here; the IMAP, POP3 and SMTP listeners use it.
    #[cfg_attr(not(test), allow(dead_code))]
    Starttls(TlsAcceptor),
}

/// One accepted connection, ready for its protocol.
pub(crate) struct Connection {
    /// The stream (already TLS for an implicit-TLS listener).
    pub(crate) stream: Stream,
    /// The client's address.
    #[allow(dead_code)] // the mail protocols log it
    pub(crate) peer: SocketAddr,
    /// The acceptor for an in-band upgrade, on a STARTTLS listener.
    #[allow(dead_code)] // the mail protocols use it
    pub(crate) starttls: Option<TlsAcceptor>,
    /// Turns true when the sandbox shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// A protocol served on a listener.
pub(crate) trait Protocol: Send + Sync + 'static {
    /// Serves one connection to its end.
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Starts the accept loop of `listener`; it stops when `shutdown` turns true, then gives connections
/// [`GRACEFUL_SHUTDOWN_TIMEOUT`] to finish.
pub(crate) fn spawn_listener(
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
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` must not live across an await point (it is not `Send`).
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};

    use rustls_pki_types::pem::PemObject as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A line protocol that answers `PING` with `PONG` and upgrades on `STARTTLS`, as a mail protocol
    /// would: the accept loop hands it the acceptor and it does the handshake in band.
    struct PingPong;

    impl Protocol for PingPong {
        fn serve(
            self: Arc<Self>,
            connection: Connection,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                let Connection {
                    stream, starttls, ..
                } = connection;
                let mut stream = tokio::io::BufReader::new(stream);
                let tls = loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    match (line.trim_end(), &starttls) {
                        ("STARTTLS", Some(acceptor)) => {
                            let _ = stream.get_mut().write_all(b"OK begin TLS\r\n").await;
                            let plain = stream.into_inner();
                            break acceptor.clone().accept(plain).await.ok();
                        }
                        ("PING", _) => {
                            let _ = stream.get_mut().write_all(b"PONG\r\n").await;
                        }
                        _ => {
                            let _ = stream.get_mut().write_all(b"BAD\r\n").await;
                        }
                    }
                };
                if let Some(tls) = tls {
                    let mut tls = tokio::io::BufReader::new(tls);
                    let mut line = String::new();
                    while tls.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let _ = tls.get_mut().write_all(b"PONG over TLS\r\n").await;
                        line.clear();
                    }
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_starttls_listener_hands_the_acceptor_to_the_protocol() {
        let generated = crate::tls::generate().unwrap();
        let acceptor = TlsAcceptor::from(Arc::clone(&generated.server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, shutdown) = watch::channel(false);
        let server = spawn_listener(
            listener,
            ListenerTls::Starttls(acceptor),
            Duration::from_secs(5),
            16,
            Arc::new(PingPong),
            shutdown,
        );
        let ca = generated.ca_pem.clone();
        let replies = tokio::task::spawn_blocking(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut reader = BufReader::new(tcp.try_clone().unwrap());
            let mut writer = tcp;
            let mut replies = Vec::new();
            for command in ["PING", "STARTTLS"] {
                writer
                    .write_all(format!("{command}\r\n").as_bytes())
                    .unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                replies.push(line);
            }
            // The TLS handshake over the same socket, trusting the sandbox CA.
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let mut tls = rustls::Stream::new(&mut client, &mut writer);
            tls.write_all(b"PING\r\n").unwrap();
            let mut reader = BufReader::new(tls);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            replies.push(line);
            replies
        })
        .await
        .unwrap();
        assert_eq!(
            replies,
            ["PONG\r\n", "OK begin TLS\r\n", "PONG over TLS\r\n"]
        );
        let _ = stop.send(true);
        server.await.unwrap();
    }
}
