//! The PROXY protocol header (v1 text, v2 binary) a load balancer sends before the client's
//! first byte: parsed by the `ppp` crate, read without taking a byte of what follows.
//!
//! The reader peeks (`recv(MSG_PEEK)`) at what has arrived, and consumes only bytes known
//! to be header: all of them while the header is incomplete (none can belong to the
//! client yet), exactly the header's length once it parses. The client's bytes stay in the
//! socket for `rfile`, the message reader or a TLS handshake, so nothing has to be handed
//! over, and the same reader serves a blocking socket (classic modes, on the worker) and a
//! non-blocking one (the evented reactor, between readiness events).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ppp::{v1, v2};
use socket2::Socket;

use crate::addr::ClientAddr;
use crate::options::Options;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v2 header's fixed part: signature, version/command, family/protocol, length.
const V2_FIXED: usize = 16;
/// The longest v2 header there can be: its length field is 16 bits.
const MAX_HEADER_MAX: usize = V2_FIXED + u16::MAX as usize;
/// A v1 line's longest, CRLF included (the spec).
const V1_MAX: usize = 107;
/// The smallest size limit that still admits every header without TLVs (v2, two Unix
/// paths: 16 + 216 bytes; v1 is at most 107).
pub(crate) const MIN_HEADER_MAX: usize = V2_FIXED + 216;

/// PP2_TYPE_AUTHORITY: the host name the client asked for (TLS SNI), per the spec.
const TLV_AUTHORITY: u8 = 0x02;
/// PP2_TYPE_UNIQUE_ID: an opaque id of the connection, per the spec.
const TLV_UNIQUE_ID: u8 = 0x05;

/// One type-length-value field of a v2 header (`PP2_TYPE_*`): ALPN (0x01), authority
/// (0x02), CRC32C (0x03), unique id (0x05), SSL (0x20), netns (0x30), or a custom type
/// (0xE0–0xEF). Kept as sent; `NOOP` (0x04) fields are dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// The type byte.
    pub kind: u8,
    /// The value, as sent.
    pub value: Vec<u8>,
}

/// What a connection's PROXY protocol header said: who the client really is, where it
/// connected to, and which proxy relayed it.
/// From [`StreamRequest::proxy_header`](crate::StreamRequest::proxy_header) and
/// [`Channel::proxy_header`](crate::Channel::proxy_header), when the server was built with
/// [`Builder::proxy_protocol`](crate::Builder::proxy_protocol).
///
/// Some headers carry no client address: a v2 `LOCAL` header (the proxy speaking for
/// itself, a health check: [`is_local`](Self::is_local)), and a v1 `PROXY UNKNOWN` or a
/// v2 `AF_UNSPEC` one (a relayed client the proxy could not describe). As the
/// specification says, the connection's own endpoints are then used: the client address
/// is the proxy's. [`source`](Self::source) is `None` for all three — a rule that trusts
/// some client addresses (loopback, say) should refuse those, or it trusts the proxy's
/// address for a client it knows nothing of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    version: u8,
    local: bool,
    source: Option<ClientAddr>,
    destination: Option<ClientAddr>,
    proxy: ClientAddr,
    tlvs: Vec<Tlv>,
}

impl ProxyHeader {
    /// 1 (text) or 2 (binary).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Did the proxy speak for itself (v2 `LOCAL`: a health check, say) rather than relay
    /// a client?
    pub fn is_local(&self) -> bool {
        self.local
    }

    /// The original client, as the proxy saw it: `None` for a local connection (v2
    /// `LOCAL`) and for a relayed one without addresses (v1 `UNKNOWN`, v2 `AF_UNSPEC`).
    pub fn source(&self) -> Option<&ClientAddr> {
        self.source.as_ref()
    }

    /// The address the client connected to on the proxy (`None` when not given).
    pub fn destination(&self) -> Option<&ClientAddr> {
        self.destination.as_ref()
    }

    /// The proxy: this connection's socket peer (`getpeername(2)`).
    pub fn proxy_address(&self) -> &ClientAddr {
        &self.proxy
    }

    /// The client this request is for: [`source`](Self::source), or, without one, the
    /// proxy (the socket's peer).
    pub fn client_address(&self) -> &ClientAddr {
        self.source.as_ref().unwrap_or(&self.proxy)
    }

    /// The v2 TLV fields, in the order sent (none for v1).
    pub fn tlvs(&self) -> &[Tlv] {
        &self.tlvs
    }

    /// The value of the first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| t.value.as_slice())
    }

    /// `PP2_TYPE_AUTHORITY`: the host name the client asked the proxy for (TLS SNI), if
    /// sent and valid UTF-8.
    pub fn authority(&self) -> Option<&str> {
        self.tlv(TLV_AUTHORITY)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// `PP2_TYPE_UNIQUE_ID`: the proxy's id for this connection (HAProxy's `unique-id`).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.tlv(TLV_UNIQUE_ID)
    }
}

/// Reads one connection's PROXY header, across as many readiness events as it takes.
#[derive(Debug)]
pub(crate) struct HeaderReader {
    /// Header bytes consumed from the socket so far.
    got: Vec<u8>,
    until: Instant,
    timeout: Duration,
    max: usize,
}

impl HeaderReader {
    /// For a connection accepted now, with the server's limits.
    pub(crate) fn new(o: &Options) -> HeaderReader {
        HeaderReader {
            got: Vec::new(),
            until: Instant::now() + o.proxy_header_timeout,
            timeout: o.proxy_header_timeout,
            max: o.proxy_header_max.clamp(MIN_HEADER_MAX, MAX_HEADER_MAX),
        }
    }

    /// Has not a byte of the header come yet?
    pub(crate) fn nothing_yet(&self) -> bool {
        self.got.is_empty()
    }

    /// The error of a header that did not come in time.
    pub(crate) fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no complete PROXY protocol header within {:?} (proxy_header_timeout; {} \
                 bytes of it received)",
                self.timeout,
                self.got.len()
            ),
        )
    }

    /// Reads on a non-blocking socket: `Ok(None)` when the socket is empty and the header
    /// incomplete (wait for it to become readable again).
    pub(crate) fn advance(
        &mut self,
        sock: &Socket,
        peer: &ClientAddr,
    ) -> io::Result<Option<ProxyHeader>> {
        loop {
            match self.step(sock, peer) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Ok(None) => {}
                r => return r,
            }
        }
    }

    /// Reads on a blocking socket until the header is whole, within its deadline. The
    /// socket's read timeout is cleared after a header (the server's own is set next, if
    /// any).
    pub(crate) fn read_blocking(
        mut self,
        sock: &Socket,
        peer: &ClientAddr,
    ) -> io::Result<ProxyHeader> {
        loop {
            let left = self.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            sock.set_read_timeout(Some(left))?;
            match self.step(sock, peer) {
                Ok(Some(h)) => {
                    sock.set_read_timeout(None)?;
                    return Ok(h);
                }
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(self.timed_out()),
                Err(e) => return Err(e),
            }
        }
    }

    /// One peek: the header (its bytes consumed), `None` (the bytes seen consumed, more
    /// needed), or an error (`WouldBlock`: nothing arrived).
    fn step(&mut self, sock: &Socket, peer: &ClientAddr) -> io::Result<Option<ProxyHeader>> {
        // The room to peek into lives only for this call: a connection waiting for the
        // rest of its header keeps just the bytes it has consumed (usually none).
        let mut buf = std::mem::take(&mut self.got);
        let start = buf.len();
        if start >= self.max {
            return Err(too_large(self.max));
        }
        buf.resize(self.max, 0);
        let n = crate::sys::peek(sock.as_raw_fd(), &mut buf[start..]);
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                self.got = buf;
                return Err(e);
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                if start == 0 {
                    "the connection closed before its PROXY protocol header".to_string()
                } else {
                    format!(
                        "the connection closed inside its PROXY protocol header ({start} bytes of it received)"
                    )
                },
            ));
        }
        match parse(&buf, self.max, peer)? {
            Some((header, len)) => {
                // `len > start`: what was consumed before did not parse.
                consume(sock, &mut buf[start..len])?;
                Ok(Some(header))
            }
            None => {
                consume(sock, &mut buf[start..])?;
                buf.shrink_to_fit();
                self.got = buf;
                Ok(None)
            }
        }
    }
}

/// Takes `buf.len()` bytes already seen by a peek out of the socket (into `buf`: the same
/// bytes again).
fn consume(mut sock: &Socket, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match sock.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn too_large(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("PROXY protocol header longer than {max} bytes (proxy_header_max)"),
    )
}

fn malformed(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("malformed PROXY protocol header: {what}"),
    )
}

/// The header at the start of `buf` and its length, `None` if incomplete.
///
/// Whole or not is decided here, and `ppp` is given exactly one whole header (its verdicts
/// on a v1 line cut short are not all "incomplete"): a v2 header says its length up front
/// (refused at once if over the limit), a v1 line ends at its CRLF within 107 bytes.
fn parse(buf: &[u8], max: usize, peer: &ClientAddr) -> io::Result<Option<(ProxyHeader, usize)>> {
    let could_be = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if could_be(V2_SIGNATURE) {
        parse_v2(buf, max, peer)
    } else if could_be(b"PROXY ") {
        parse_v1(buf, peer)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no PROXY protocol header: the connection started with other bytes",
        ))
    }
}

fn parse_v1(buf: &[u8], peer: &ClientAddr) -> io::Result<Option<(ProxyHeader, usize)>> {
    let Some(lf) = buf[..buf.len().min(V1_MAX)]
        .iter()
        .position(|&b| b == b'\n')
    else {
        if buf.len() >= V1_MAX {
            return Err(malformed("a v1 line longer than 107 bytes"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(malformed("a v1 line must end with CRLF"));
    }
    let len = lf + 1;
    let h = v1::Header::try_from(&buf[..len]).map_err(malformed)?;
    if h.header.len() != len {
        return Err(malformed("a CR inside the v1 line"));
    }
    let (source, destination) = match h.addresses {
        v1::Addresses::Tcp4(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        v1::Addresses::Tcp6(a) => (
            SocketAddr::from((a.source_address, a.source_port)),
            SocketAddr::from((a.destination_address, a.destination_port)),
        ),
        // "the receiver must ignore anything presented before the CRLF is found" and use
        // the real connection endpoints.
        v1::Addresses::Unknown => return Ok(Some((unknown(1, false, peer, Vec::new()), len))),
    };
    let header = ProxyHeader {
        version: 1,
        local: false,
        source: Some(ClientAddr::Inet(source)),
        destination: Some(ClientAddr::Inet(destination)),
        proxy: peer.clone(),
        tlvs: Vec::new(),
    };
    Ok(Some((header, len)))
}

fn parse_v2(buf: &[u8], max: usize, peer: &ClientAddr) -> io::Result<Option<(ProxyHeader, usize)>> {
    if buf.len() < V2_FIXED {
        return Ok(None);
    }
    let len = V2_FIXED + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > max {
        return Err(too_large(max));
    }
    if buf.len() < len {
        return Ok(None);
    }
    match buf[12] {
        // LOCAL: "the receiver must accept this connection as valid and must use the real
        // connection endpoints and discard the protocol block including the family".
        0x20 => return Ok(Some((unknown(2, true, peer, Vec::new()), len))),
        0x21 => {}
        b => {
            return Err(malformed(format_args!(
                "v2 version/command byte {b:#04x} (0x20 LOCAL or 0x21 PROXY)"
            )));
        }
    }
    let h = v2::Header::try_from(&buf[..len]).map_err(malformed)?;
    let tlvs = h
        .tlvs()
        .filter(|t| !matches!(t, Ok(t) if t.kind == v2::Type::NoOp as u8))
        .map(|t| {
            t.map(|t| Tlv {
                kind: t.kind,
                value: t.value.into_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(malformed)?;
    let (source, destination) = match h.addresses {
        v2::Addresses::IPv4(a) => (
            ClientAddr::Inet((a.source_address, a.source_port).into()),
            ClientAddr::Inet((a.destination_address, a.destination_port).into()),
        ),
        v2::Addresses::IPv6(a) => (
            ClientAddr::Inet((a.source_address, a.source_port).into()),
            ClientAddr::Inet((a.destination_address, a.destination_port).into()),
        ),
        v2::Addresses::Unix(u) => (unix_addr(&u.source), unix_addr(&u.destination)),
        // AF_UNSPEC: "the receiver should ignore address information".
        v2::Addresses::Unspecified => return Ok(Some((unknown(2, false, peer, tlvs), len))),
    };
    let header = ProxyHeader {
        version: 2,
        local: false,
        source: Some(source),
        destination: Some(destination),
        proxy: peer.clone(),
        tlvs,
    };
    Ok(Some((header, len)))
}

/// A header without addresses: the proxy's own connection (`local`, v2 `LOCAL`) or a
/// relayed one it could not describe (v1 `UNKNOWN`, v2 `AF_UNSPEC`).
fn unknown(version: u8, local: bool, peer: &ClientAddr, tlvs: Vec<Tlv>) -> ProxyHeader {
    ProxyHeader {
        version,
        local,
        source: None,
        destination: None,
        proxy: peer.clone(),
        tlvs,
    }
}

/// A v2 `AF_UNIX` address: a path up to its first NUL, or (starting with NUL) a Linux
/// abstract name, its padding NULs dropped.
fn unix_addr(raw: &[u8; 108]) -> ClientAddr {
    if raw[0] == 0 {
        let name = &raw[1..];
        let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end == 0 {
            return ClientAddr::Unix(None);
        }
        return ClientAddr::UnixAbstract(name[..end].to_vec());
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    use std::os::unix::ffi::OsStrExt;
    ClientAddr::Unix(Some(PathBuf::from(std::ffi::OsStr::from_bytes(
        &raw[..end],
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> ClientAddr {
        ClientAddr::Inet("127.0.0.1:9".parse().unwrap())
    }

    fn parsed(buf: &[u8]) -> io::Result<Option<(ProxyHeader, usize)>> {
        parse(buf, 4096, &peer())
    }

    #[test]
    fn a_v1_header_gives_the_original_client_and_its_length() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello";
        let (h, len) = parsed(line).unwrap().unwrap();
        assert_eq!(len, line.len() - 5);
        assert_eq!(h.client_address().to_string(), "192.0.2.7:56324");
        assert_eq!(h.destination().unwrap().to_string(), "198.51.100.1:443");
        assert_eq!(h.proxy_address(), &peer());
        assert!(!h.is_local());
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete_not_an_error() {
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 1000 2000\r\n";
        for n in 1..line.len() {
            assert!(parsed(&line[..n]).unwrap().is_none(), "{n} bytes");
        }
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "192.0.2.7:1".parse::<SocketAddr>().unwrap(),
                "192.0.2.8:2".parse::<SocketAddr>().unwrap(),
            ),
        )
        .build()
        .unwrap();
        for n in 1..v2.len() {
            assert!(parsed(&v2[..n]).unwrap().is_none(), "{n} bytes");
        }
        assert_eq!(parsed(&v2).unwrap().unwrap().1, v2.len());
    }

    #[test]
    fn unknown_and_local_headers_keep_the_socket_peer() {
        let (h, _) = parsed(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert!(!h.is_local() && h.source().is_none());
        assert_eq!(h.client_address(), &peer());
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (h, len) = parsed(&local).unwrap().unwrap();
        assert!(h.is_local() && len == local.len() && h.version() == 2);
    }

    #[test]
    fn tlvs_are_kept_and_noops_dropped() {
        let v2 = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (
                "[2001:db8::1]:1".parse::<SocketAddr>().unwrap(),
                "[2001:db8::2]:2".parse::<SocketAddr>().unwrap(),
            ),
        )
        .write_tlv(v2::Type::Authority, b"example.com")
        .unwrap()
        .write_tlv(v2::Type::NoOp, b"")
        .unwrap()
        .write_tlv(v2::Type::UniqueId, b"id-1")
        .unwrap()
        .build()
        .unwrap();
        let (h, _) = parsed(&v2).unwrap().unwrap();
        assert_eq!(h.authority(), Some("example.com"));
        assert_eq!(h.unique_id(), Some(&b"id-1"[..]));
        assert_eq!(h.tlvs().len(), 2);
        assert_eq!(h.client_address().to_string(), "[2001:db8::1]:1");
    }

    #[test]
    fn other_bytes_oversized_and_garbage_headers_are_refused() {
        let e = parsed(b"GET / HTTP/1.1\r\n").unwrap_err();
        assert!(e.to_string().contains("no PROXY protocol header"), "{e}");
        let e = parsed(b"PROXY TCP4 999.0.0.1 1.2.3.4 1 2\r\n").unwrap_err();
        assert!(e.to_string().contains("malformed"), "{e}");
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let e = parse(&big, 4096, &peer()).unwrap_err();
        assert!(e.to_string().contains("proxy_header_max"), "{e}");
        // A v1 line without its CRLF within 107 bytes (the spec's limit).
        let e = parsed(&[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(18)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_v1_line_is_exactly_up_to_its_crlf_within_107_bytes() {
        // 107 bytes with the CRLF: the longest allowed (TCP6, both addresses at full length).
        let addr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let line = format!("PROXY TCP6 {addr} {addr} 65535 65535\r\n");
        assert_eq!(line.len(), 104);
        let padded = line.replace("PROXY TCP6 ", "PROXY TCP6    ");
        assert_eq!(padded.len(), 107);
        // ppp refuses the extra spaces, but not for being long: the length check passed.
        let e = parsed(padded.as_bytes()).unwrap_err();
        assert!(!e.to_string().contains("longer than 107"), "{e}");
        let e = parsed(&[b"PROXY ".as_slice(), &[b'x'; 102]].concat()).unwrap_err();
        assert!(e.to_string().contains("longer than 107"), "{e}");
        // A lone LF ends nothing: the client's bytes behind it are never taken as header.
        let e = parsed(b"PROXY UNKNOWN x\nGET / HTTP/1.1\r\n").unwrap_err();
        assert!(e.to_string().contains("CRLF"), "{e}");
        let (_, len) = parsed(b"PROXY UNKNOWN\r\nGET / HTTP/1.1\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(len, 15);
    }

    #[test]
    fn v2_limits_commands_and_local_headers_follow_the_spec() {
        let h = v2_bytes(0x21, 0x11, &[0u8; 12]);
        assert_eq!(parse(&h, h.len(), &peer()).unwrap().unwrap().1, h.len());
        let e = parse(&h, h.len() - 1, &peer()).unwrap_err();
        assert!(e.to_string().contains("proxy_header_max"), "{e}");
        for bad in [0x22, 0x11, 0x31] {
            let e = parsed(&v2_bytes(bad, 0x11, &[0u8; 12])).unwrap_err();
            assert!(e.to_string().contains("version/command"), "{bad:#x}: {e}");
        }
        // LOCAL: the family and the block are ignored, even AF_INET with no addresses.
        let (h, len) = parsed(&v2_bytes(0x20, 0x11, &[])).unwrap().unwrap();
        assert!(h.is_local() && len == 16 && h.source().is_none());
        // PROXY with AF_UNSPEC: a relayed client without addresses.
        let (h, _) = parsed(&v2_bytes(0x21, 0x00, &[])).unwrap().unwrap();
        assert!(!h.is_local() && h.source().is_none());
        // An address block shorter than its family needs.
        assert!(parsed(&v2_bytes(0x21, 0x11, &[0u8; 4])).is_err());
    }

    fn v2_bytes(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[ver_cmd, fam]);
        v.extend_from_slice(&(block.len() as u16).to_be_bytes());
        v.extend_from_slice(block);
        v
    }

    #[test]
    fn a_v2_unix_address_becomes_a_path_or_an_abstract_name() {
        let mut raw = [0u8; 108];
        raw[..9].copy_from_slice(b"/run/x.sk");
        assert_eq!(unix_addr(&raw).to_string(), "/run/x.sk");
        let mut raw = [0u8; 108];
        raw[1..4].copy_from_slice(b"abc");
        assert_eq!(unix_addr(&raw), ClientAddr::UnixAbstract(b"abc".to_vec()));
    }
}
