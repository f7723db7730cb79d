//! The accept loop: TCP connections in, TLS streams out. Each handshake runs
//! on a task of its own (owned by the stream: dropped with it), bounded in
//! time and in number, so a slow or failing client holds up nobody; a
//! failed handshake is logged at debug and counted, never an error of the
//! server.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use rustls::server::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::TcpIncoming;

use super::ServerTls;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, accepting waits.
const MAX_HANDSHAKES: usize = 1024;

/// What a gRPC server passes to `serve_with_incoming_shutdown`.
pub enum Incoming {
    /// h2c: today's behaviour without `--tls-cert`.
    Plain(TcpIncoming),
    Tls(TlsIncoming),
}

impl Incoming {
    /// Connections on `listener`: TLS ones when `tls` is given (TCP_NODELAY either way).
    pub fn new(listener: TcpListener, tls: Option<&ServerTls>) -> Self {
        match tls {
            None => Self::Plain(TcpIncoming::from(listener).with_nodelay(Some(true))),
            Some(tls) => Self::Tls(TlsIncoming::new(
                listener,
                tls.grpc_config(),
                tls.handshake_failures(),
            )),
        }
    }
}

/// TLS connections on a listener.
pub struct TlsIncoming {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsStream<TcpStream>>>,
    failures: Counter,
}

impl TlsIncoming {
    fn new(listener: TcpListener, config: Arc<ServerConfig>, failures: Counter) -> Self {
        Self {
            listener,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
            failures,
        }
    }

    /// TLS connections for the metrics port (ALPN http/1.1).
    pub fn http(listener: TcpListener, tls: &ServerTls) -> Self {
        Self::new(listener, tls.http_config(), tls.handshake_failures())
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    failures: Counter,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(err)) => {
            tracing::debug!(peer = %peer, error = %err, "tls handshake failed");
            failures.inc();
            None
        }
        Err(_) => {
            tracing::debug!(peer = %peer, "tls handshake timed out");
            failures.inc();
            None
        }
    }
}

impl Stream for TlsIncoming {
    type Item = std::io::Result<TlsStream<TcpStream>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Take every waiting connection into a handshake (this also
        // registers for the next one).
        while this.handshakes.len() < MAX_HANDSHAKES {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((tcp, peer))) => {
                    let _ = tcp.set_nodelay(true);
                    this.handshakes.spawn(handshake(
                        this.acceptor.clone(),
                        tcp,
                        peer,
                        this.failures.clone(),
                    ));
                }
                // The server logs it and goes on accepting.
                Poll::Ready(Err(err)) => return Poll::Ready(Some(Err(err))),
                Poll::Pending => break,
            }
        }
        loop {
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(tls)))) => return Poll::Ready(Some(Ok(tls))),
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(err))) => {
                    tracing::debug!(error = %err, "tls handshake task failed");
                }
                // Empty, or nothing finished: woken by the listener or a handshake.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl axum::serve::Listener for TlsIncoming {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match futures::StreamExt::next(self).await {
                Some(Ok(tls)) => {
                    let peer = tls
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (tls, peer);
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "metrics accept failed");
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// Plain TCP connections for an axum server, with TCP_NODELAY on each:
/// without it a small write (an SSE event after the headers) can wait for
/// the client's delayed ACK, 40 ms on Linux.
pub struct NoDelay(pub TcpListener);

impl axum::serve::Listener for NoDelay {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    return (tcp, peer);
                }
                Err(err) => {
                    tracing::debug!(error = %err, "accept failed");
                    // Out of file descriptors, say: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
