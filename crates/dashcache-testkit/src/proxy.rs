//! [`Proxy`]: a TCP proxy in front of a real server that can partition it from its clients
//! while the server keeps its data — what killing a server cannot show.
//!
//! - [`cut`](Proxy::cut): every connection is closed, and new ones are closed at once (a
//!   firewall that resets).
//! - [`blackhole`](Proxy::blackhole): connections stay open, new ones are accepted, and no
//!   byte moves either way (a partition that drops packets: clients wait for their
//!   deadlines). What was sent meanwhile is delivered after [`restore`](Proxy::restore), as
//!   TCP does once the network heals — late, which is what stale invalidations are made of.
//! - [`restore`](Proxy::restore): traffic flows again.
//!
//! The proxy runs on a thread of its own (with its own runtime), so it keeps working whatever
//! the test's runtime does, and stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes flow.
    Pass,
    /// Bytes wait (connections stay open).
    Blackhole,
    /// Connections are closed.
    Cut,
}

/// A TCP proxy on a free loopback port; see the module docs.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `target`, passing traffic.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target: SocketAddr) -> Self {
        let (mode, _) = watch::channel(Mode::Pass);
        let mode = Arc::new(mode);
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let modes = Arc::clone(&mode);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the proxy");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a loopback port for the proxy");
                addr_tx
                    .send(listener.local_addr().expect("the proxy's address"))
                    .expect("the test waits for the address");
                let accept = async {
                    loop {
                        let Ok((client, _)) = listener.accept().await else {
                            continue;
                        };
                        let modes = Arc::clone(&modes);
                        tokio::spawn(serve(client, target, modes));
                    }
                };
                let stopped = async {
                    while stop_rx.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                };
                tokio::select! {
                    () = accept => {}
                    () = stopped => {}
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the proxy started");
        Self {
            addr,
            mode,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:<port>`: a Redis URL through the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection, and every new one at once.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops every byte, both ways, on every connection (new ones are accepted, and wait).
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Lets traffic flow again (what waited is delivered).
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(client: TcpStream, target: SocketAddr, modes: Arc<watch::Sender<Mode>>) {
    let mut mode = modes.subscribe();
    if wait_for_pass(&mut mode).await.is_none() {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pipe(client_read, server_write, modes.subscribe()) => {}
        () = pipe(server_read, client_write, modes.subscribe()) => {}
    }
}

/// Copies `from` to `to` while the mode lets it; ends on a cut or a closed side.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_for_pass(&mut mode).await.is_none() {
            return;
        }
        tokio::select! {
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                // Read while passing, held if the mode changed meanwhile.
                if wait_for_pass(&mut mode).await.is_none() {
                    return;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits until the mode is `Pass`; `None` on a cut (or a dropped proxy).
async fn wait_for_pass(mode: &mut watch::Receiver<Mode>) -> Option<()> {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Pass => return Some(()),
            Mode::Cut => return None,
            Mode::Blackhole => mode.changed().await.ok()?,
        }
    }
}
