//! The UDP relay: forwards each datagram to the other peers it has heard from.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use socketserver::DatagramRequest;

const MAX_PEERS: usize = 1024;
const PEER_IDLE: Duration = Duration::from_secs(600);

/// The UDP relay's peers and when each was last heard from.
#[derive(Default)]
pub struct Relay(Mutex<HashMap<SocketAddr, Instant>>);

impl Relay {
    /// Notes that `from` spoke; the other live peers, and whether `from` is new.
    fn heard_from(&self, from: SocketAddr) -> (Vec<SocketAddr>, bool) {
        let mut peers = self.0.lock();
        let now = Instant::now();
        peers.retain(|_, seen| now.duration_since(*seen) < PEER_IDLE);
        if peers.len() >= MAX_PEERS && !peers.contains_key(&from) {
            let oldest = peers.iter().min_by_key(|(_, seen)| **seen).map(|(a, _)| *a);
            if let Some(a) = oldest {
                peers.remove(&a);
            }
        }
        let new = peers.insert(from, now).is_none();
        (peers.keys().filter(|a| **a != from).copied().collect(), new)
    }
}

/// The UDP handler: forward the datagram to every other peer, never waiting.
pub fn relay_datagram(relay: &Relay, req: &mut DatagramRequest) -> io::Result<()> {
    let Some(from) = req.client_address().as_inet() else {
        return Ok(());
    };
    let (others, new) = relay.heard_from(from);
    if req.packet().is_empty() {
        log::info!("chat: {from}: hello ({} other peers)", others.len());
        if new {
            let hello = format!("* relay: you are in, with {} other peers", others.len());
            req.reply(hello.as_bytes())?;
        }
        return Ok(());
    }
    let sock = req.socket();
    let sent = others
        .iter()
        .filter(|to| sock.send_to(req.packet(), &(**to).into()).is_ok())
        .count();
    log::info!(
        "chat: {from}: {} bytes relayed to {sent} of {} peers",
        req.packet().len(),
        others.len()
    );
    Ok(())
}
