//! A TCP proxy inside the bench that puts Redis "further away": every chunk
//! read from one side is written to the other `delay` after it was read, in
//! each direction, in order.
//!
//! Accepting and connecting run on tokio; the forwarding runs on plain
//! threads (a reader and a writer per direction and connection) because
//! tokio's timer has 1 ms granularity, which would turn 0.5 ms into 1-2 ms,
//! while `thread::sleep` wakes within tens of microseconds. A worker holds a
//! few Redis connections, so the threads are few. The reader timestamps each
//! chunk and queues it; the writer sleeps until the chunk is due, then writes
//! it, so the order of each direction is kept and the delay does not add up
//! across queued chunks. The achieved delay is measured and reported.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::stats::{Run, lock, micros};

/// A running proxy: `addr` forwards to the target with the delay.
pub struct DelayProxy {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
    /// A handle on every socket opened, to end the forwarding threads at stop.
    sockets: Arc<Mutex<Vec<TcpStream>>>,
    /// Read-to-written time of every forwarded chunk, in microseconds.
    delays: Arc<Mutex<Run>>,
}

impl DelayProxy {
    /// Listens on 127.0.0.1:0; each accepted connection is forwarded to `target`.
    pub async fn start(target: String, delay: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let delays = Arc::new(Mutex::new(Run::new()));
        let (s, d) = (Arc::clone(&sockets), Arc::clone(&delays));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let Ok(upstream) = tokio::net::TcpStream::connect(&target).await else { continue };
                if let Err(e) = forward(client, upstream, delay, &s, &d) {
                    eprintln!("delay proxy: cannot forward a connection: {e}");
                }
            }
        });
        Ok(Self { addr, accept, sockets, delays })
    }

    /// Stops accepting and closes every connection (their threads then end).
    /// Returns the achieved per-chunk delay.
    pub fn stop(self) -> Run {
        self.accept.abort();
        for s in lock(&self.sockets).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        std::mem::replace(&mut *lock(&self.delays), Run::new())
    }
}

fn forward(
    client: tokio::net::TcpStream,
    upstream: tokio::net::TcpStream,
    delay: Duration,
    sockets: &Mutex<Vec<TcpStream>>,
    delays: &Arc<Mutex<Run>>,
) -> std::io::Result<()> {
    let (c, u) = (client.into_std()?, upstream.into_std()?);
    for s in [&c, &u] {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
    }
    lock(sockets).extend([c.try_clone()?, u.try_clone()?]);
    pipe(c.try_clone()?, u.try_clone()?, delay, Arc::clone(delays))?;
    pipe(u, c, delay, Arc::clone(delays))
}

/// One direction: a reader thread stamps chunks, a writer thread writes each when due.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, delays: Arc<Mutex<Run>>) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let from_again = from.try_clone()?;
    thread::Builder::new().name("delay-read".into()).spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` lets the writer drain what is queued, then close.
    })?;
    thread::Builder::new().name("delay-write".into()).spawn(move || {
        // `thread::sleep` wakes late by the timer slack plus scheduling (tens
        // of microseconds, more under load): learn by how much, wake that much
        // sooner, so chunks leave on time on average without spinning.
        let mut early = Duration::ZERO;
        while let Ok((read_at, bytes)) = rx.recv() {
            let due = read_at + delay;
            let now = Instant::now();
            if due > now + early {
                let wake = due - early;
                thread::sleep(wake - now);
                let late = Instant::now().saturating_duration_since(wake);
                early = ((early * 7 + late) / 8).min(delay / 2);
            }
            if to.write_all(&bytes).is_err() {
                // The far side is gone: end the reader of this direction too.
                let _ = from_again.shutdown(Shutdown::Both);
                break;
            }
            lock(&delays).record(Ok(micros(read_at.elapsed())));
        }
        let _ = to.shutdown(Shutdown::Write);
    })?;
    Ok(())
}
