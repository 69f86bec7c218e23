//! Serving the axum router over HTTPS (tokio-rustls + hyper-util) or plain HTTP.
//!
//! Each accepted connection gets its own task, and the TLS handshake runs inside that task, so a slow or
//! stalled handshake never delays other clients.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower::ServiceExt;

/// On shutdown, connections get this long to finish in-flight requests.
const GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the accept loop; it stops when `shutdown` turns true. A TLS handshake that has not finished
/// within `tls_handshake_timeout` is dropped.
pub(crate) fn spawn(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    tls_handshake_timeout: Duration,
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
                            serve_connection(TokioIo::new(tls_stream), router, shutdown).await;
                        }
                    }
                    None => serve_connection(TokioIo::new(stream), router, shutdown).await,
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

async fn serve_connection<I>(io: I, router: Router, mut shutdown: watch::Receiver<bool>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .oneshot(request)
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
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
