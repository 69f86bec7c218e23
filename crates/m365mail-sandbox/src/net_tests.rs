//! The accept loop (m365mail-server) with a STARTTLS line protocol, as the sandbox's mail services use it.

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};

    use rustls_pki_types::pem::PemObject as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

    use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

    use m365mail_server::{Connection, ListenerTls, Protocol, spawn_listener};
    use tokio::{net::TcpListener, sync::watch};
    use tokio_rustls::TlsAcceptor;

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
