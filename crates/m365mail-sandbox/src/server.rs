//! Serving the axum router over HTTPS (tokio-rustls + hyper-util) or plain HTTP.
//!
//! Each accepted connection gets its own task, and the TLS handshake runs inside that task, so a slow or
//! stalled handshake never delays other clients. A connection that does not complete its request
//! headers in time is closed (see [`crate::SandboxConfig::header_read_timeout`]).

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
    task::JoinHandle,
};
use tower::ServiceExt;

/// On shutdown, connections get this long to finish in-flight requests.
const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the accept loop; it stops when `shutdown` turns true. A TLS handshake that has not finished
/// within `tls_handshake_timeout` is dropped, and so is a connection without complete request headers
/// within `header_read_timeout`.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    tls_handshake_timeout: Duration,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = stopped(&mut shutdown) => break,
            };
            let Ok((stream, _peer)) = accepted else {
                // Accept errors (e.g. too many open files) are transient; keep serving.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let acceptor = acceptor.clone();
            let shutdown = shutdown.clone();
            connections.spawn(async move {
                match acceptor {
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(tls_handshake_timeout, acceptor.accept(stream))
                                .await;
                        if let Ok(Ok(tls_stream)) = handshake {
                            let io = TokioIo::new(tls_stream);
                            serve_connection(io, router, header_read_timeout, shutdown).await;
                        }
                    }
                    None => {
                        let io = TokioIo::new(stream);
                        serve_connection(io, router, header_read_timeout, shutdown).await;
                    }
                }
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

async fn serve_connection<I>(
    io: I,
    router: Router,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let first_request = Arc::new(Notify::new());
    let request_seen = Arc::clone(&first_request);
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let router = router.clone();
            request_seen.notify_one();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper bounds HTTP/1.1 headers (also those of each later keep-alive request) once it has a timer.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    // Before hyper's own timer starts, the connection is still choosing between HTTP/1.1 and HTTP/2
    // (no bound there), and HTTP/2 has no header timeout at all: the first request must arrive in time.
    let headers_overdue = async {
        if tokio::time::timeout(header_read_timeout, first_request.notified())
            .await
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = headers_overdue => {}
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACEFUL_SHUTDOWN_TIMEOUT, connection).await;
        }
    }
}

/// Completes once shutdown was requested (or the sandbox handle is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` must not live across an await point (it is not `Send`).
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
