//! HTTP on a sandbox listener: the identity endpoints, the admin API (and later Graph) served by axum over
//! hyper-util, on the accept loop of [`m365mail_server`] (which does the TLS). A connection that does not
//! complete its request headers in time is closed (see [`crate::SandboxConfig::header_read_timeout`]).

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use m365mail_server::{Connection, GRACEFUL_SHUTDOWN_TIMEOUT, Protocol, stopped};

/// The identity listener's protocol: the axum router over HTTP/1.1 or HTTP/2 (hyper-util's auto builder).
/// A connection that does not complete its request headers within `header_read_timeout` is closed.
pub(crate) struct HttpProtocol {
    pub(crate) router: Router,
    pub(crate) header_read_timeout: Duration,
}

impl Protocol for HttpProtocol {
    fn serve(self: Arc<Self>, connection: Connection) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            serve_connection(
                TokioIo::new(connection.stream),
                self.router.clone(),
                self.header_read_timeout,
                connection.shutdown,
            )
            .await;
        })
    }
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
