//! A TCP proxy that can be paused: the server behind it then looks hung.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// A TCP proxy on a free loopback port in front of a server. While paused it accepts
/// connections and reads what clients send but forwards nothing either way, so the
/// server behind it looks hung (not down: nothing is refused or closed). Resumed, it
/// forwards what it held. Dropping it closes every connection.
///
/// ```no_run
/// use keypal_testing::Proxy;
///
/// let proxy = Proxy::start("redis://127.0.0.1:6379")?;
/// let url = proxy.url(); // redis://127.0.0.1:<the proxy's port>
/// proxy.pause(); // clients of `url` now wait forever
/// proxy.resume();
/// # let _ = url;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Proxy {
    url: String,
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    paused: Mutex<bool>,
    resumed: Condvar,
    closed: AtomicBool,
    /// Every socket, to close them all on drop.
    sockets: Mutex<Vec<TcpStream>>,
}

impl State {
    /// Blocks while paused; false once the proxy is closed.
    fn wait_while_paused(&self) -> bool {
        let paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        let _unpaused = self.resumed.wait_while(paused, |paused| *paused).unwrap_or_else(PoisonError::into_inner);
        !self.closed.load(Ordering::Acquire)
    }

    fn set_paused(&self, paused: bool) {
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = paused;
        self.resumed.notify_all();
    }

    fn keep(&self, socket: &TcpStream) {
        if let Ok(clone) = socket.try_clone() {
            self.sockets.lock().unwrap_or_else(PoisonError::into_inner).push(clone);
        }
    }
}

impl Proxy {
    /// Starts a proxy to the server of `url` (`scheme://[user[:password]@]host[:port][/...]`;
    /// without a port, PostgreSQL's 5432 or Redis's 6379 by the scheme).
    ///
    /// # Errors
    ///
    /// When the URL names no server that resolves, or no local port can be bound.
    pub fn start(url: &str) -> std::io::Result<Proxy> {
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {url}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("not a URL"))?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host),
            None => (None, authority),
        };
        let default_port = match scheme {
            "postgres" | "postgresql" => 5432,
            "redis" | "rediss" => 6379,
            _ => return Err(invalid("no default port for this scheme")),
        };
        let has_port = host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let upstream = if has_port { host.to_socket_addrs() } else { (host, default_port).to_socket_addrs() }?
            .next()
            .ok_or_else(|| invalid("the host does not resolve"))?;

        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let url = match userinfo {
            Some(userinfo) => format!("{scheme}://{userinfo}@{addr}{tail}"),
            None => format!("{scheme}://{addr}{tail}"),
        };
        let state = Arc::new(State::default());
        let accepting = state.clone();
        std::thread::spawn(move || accept(&listener, upstream, &accepting));
        Ok(Proxy { url, addr, state })
    }

    /// The URL of the server behind the proxy, through the proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Stops forwarding: the server looks hung to every client, connected or new.
    pub fn pause(&self) {
        self.state.set_paused(true);
    }

    /// Forwards again, what was held first.
    pub fn resume(&self) {
        self.state.set_paused(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::Release);
        self.state.set_paused(false);
        for socket in self.state.sockets.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accepting thread, which then sees `closed`.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept(listener: &TcpListener, upstream: SocketAddr, state: &Arc<State>) {
    for client in listener.incoming() {
        if state.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(client) = client else { continue };
        state.keep(&client);
        let state = state.clone();
        std::thread::spawn(move || {
            if !state.wait_while_paused() {
                return;
            }
            let Ok(server) = TcpStream::connect(upstream) else { return };
            state.keep(&server);
            let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else { return };
            let back = state.clone();
            std::thread::spawn(move || pump(server_reader, client, &back));
            pump(client_reader, server, &state);
        });
    }
}

/// Copies `from` to `to` until either closes, holding what it read while paused.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if !state.wait_while_paused() || to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
