//! Message framing for message handlers: how a byte stream is cut into messages
//! ([`MessageFraming`]: lines, length-prefixed frames, or a [`Decoder`] of your own), and
//! the buffer that does it without blocking. Python's `asynchat.set_terminator`.

use std::fmt;
use std::io::{self, Read};
use std::sync::Arc;

use super::Framing;

/// Default longest line of [`MessageFraming::Lines`]: 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// What [`Decoder::decode`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// No complete message yet: read more. `need` is a hint of how many bytes the whole
    /// message takes, when the header says so (the buffer is grown for it).
    Incomplete {
        /// Total bytes the message needs, if known.
        need: Option<usize>,
    },
    /// A message: `buf[start..end]` is handed to the handler, then `consumed` bytes are
    /// dropped from the buffer (`end <= consumed`).
    Message {
        /// First byte of the message.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// Bytes to drop (header, message, trailer).
        consumed: usize,
    },
}

/// Cuts messages out of a byte stream: a custom framing for
/// [`MessageFraming::Custom`]. One decoder per connection, so it may keep state.
///
/// Return [`Decoded::Incomplete`] until a whole message is buffered, and an error
/// (`InvalidData`) for input that can never become a message: the connection is closed
/// and the error reported to `handle_error`.
pub trait Decoder: Send + 'static {
    /// Looks for one complete message at the start of `buf`.
    fn decode(&mut self, buf: &[u8]) -> io::Result<Decoded>;
}

/// How the byte stream is cut into messages. Set with
/// [`Builder::framing`](crate::Builder::framing); default `Lines { max: 64 KiB }`.
#[derive(Clone)]
pub enum MessageFraming {
    /// Lines ending in `\n`, the newline included (as Python's `readline()` returns
    /// them). A line longer than `max` bytes closes the connection with `InvalidData`. A last
    /// line without a newline before the peer's end of stream is delivered too.
    Lines {
        /// The longest line, newline included.
        max: usize,
    },
    /// Length-prefixed frames of [`Framing`]: the message is the payload,
    /// without its header. `Framing::python()` is the tutorials' `struct.pack('i', n)`.
    /// Negative or oversized lengths close the connection with `InvalidData` before any
    /// memory is reserved for them.
    Frames(Framing),
    /// No framing: whatever bytes have arrived are one message (asyncio's
    /// `data_received`), at most 16 KiB per read. For byte-stream protocols such as echo,
    /// where a message boundary means nothing.
    Raw,
    /// A decoder of your own, built once per connection.
    Custom(Arc<dyn Fn() -> Box<dyn Decoder> + Send + Sync>),
}

impl Default for MessageFraming {
    fn default() -> Self {
        MessageFraming::Lines {
            max: DEFAULT_MAX_LINE,
        }
    }
}

impl fmt::Debug for MessageFraming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageFraming::Lines { max } => f.debug_struct("Lines").field("max", max).finish(),
            MessageFraming::Frames(fr) => f.debug_tuple("Frames").field(fr).finish(),
            MessageFraming::Raw => f.write_str("Raw"),
            MessageFraming::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl MessageFraming {
    /// A decoder for one connection.
    pub(crate) fn decoder(&self) -> Box<dyn Decoder> {
        match self {
            MessageFraming::Lines { max } => Box::new(LineDecoder {
                max: (*max).max(1),
                scanned: 0,
            }),
            MessageFraming::Frames(fr) => Box::new(FrameDecoder(*fr)),
            MessageFraming::Raw => Box::new(RawDecoder),
            MessageFraming::Custom(make) => make(),
        }
    }
}

struct LineDecoder {
    max: usize,
    /// Bytes already searched for a newline (a trickled line is not rescanned).
    scanned: usize,
}

impl Decoder for LineDecoder {
    fn decode(&mut self, buf: &[u8]) -> io::Result<Decoded> {
        let from = self.scanned.min(buf.len());
        let limit = buf.len().min(self.max);
        if let Some(i) = buf[from.min(limit)..limit].iter().position(|&b| b == b'\n') {
            let end = from.min(limit) + i + 1;
            self.scanned = 0;
            return Ok(Decoded::Message {
                start: 0,
                end,
                consumed: end,
            });
        }
        if buf.len() >= self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "line longer than {} bytes (MessageFraming::Lines max)",
                    self.max
                ),
            ));
        }
        self.scanned = buf.len();
        Ok(Decoded::Incomplete { need: None })
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    fn decode(&mut self, buf: &[u8]) -> io::Result<Decoded> {
        Ok(if buf.is_empty() {
            Decoded::Incomplete { need: None }
        } else {
            Decoded::Message {
                start: 0,
                end: buf.len(),
                consumed: buf.len(),
            }
        })
    }
}

struct FrameDecoder(Framing);

impl Decoder for FrameDecoder {
    fn decode(&mut self, buf: &[u8]) -> io::Result<Decoded> {
        let hlen = self.0.prefix().header_len();
        if buf.len() < hlen {
            return Ok(Decoded::Incomplete { need: None });
        }
        let Some(len) = self.0.read_header(&mut &buf[..hlen])? else {
            return Ok(Decoded::Incomplete { need: None });
        };
        let total = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(hlen))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too large"))?;
        if buf.len() < total {
            return Ok(Decoded::Incomplete { need: Some(total) });
        }
        Ok(Decoded::Message {
            start: hlen,
            end: total,
            consumed: total,
        })
    }
}

/// The input side of a message connection: a buffer and the decoder cutting it. Shared by
/// the evented reactor and the blocking loop of the classic modes.
pub(crate) struct MessageReader {
    /// Initialized memory (zeroed once, when it grows: never again per read);
    /// `buf[start..end]` are the bytes read and not yet consumed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The last read returned less than its room.
    short: bool,
    decoder: Box<dyn Decoder>,
    /// The range of the message returned by the last `next`.
    current: (usize, usize),
}

/// Bytes of room made for each `read` call at least.
const CHUNK: usize = 16 * 1024;
/// Half a message up to this size is kept in a buffer of its own size between turns.
const SMALL_PARTIAL: usize = 1024;

impl MessageReader {
    pub(crate) fn new(framing: &MessageFraming) -> MessageReader {
        MessageReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            short: false,
            decoder: framing.decoder(),
            current: (0, 0),
        }
    }

    /// Bytes buffered that are not yet a whole message (half a message).
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Makes `buf` at least `len` bytes long (zeroing only what is new).
    fn grow_to(&mut self, len: usize) {
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
    }

    /// Did the last [`read_from`](Self::read_from) return less than it had room for (the
    /// socket had no more for now)?
    pub(crate) fn short_read(&self) -> bool {
        self.short
    }

    /// One `read` into the buffer: `Ok(0)` is the peer's end of stream.
    pub(crate) fn read_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.start > 0 && (self.start == self.end || self.buf.len() - self.end < CHUNK) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < CHUNK {
            self.grow_to(self.end + CHUNK);
        }
        let room = self.buf.len() - self.end;
        let n = loop {
            match r.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.short = n < room;
        self.end += n.min(room);
        Ok(n)
    }

    /// The next complete message, if one is buffered: `Ok(true)` and [`message`](Self::message)
    /// returns it.
    pub(crate) fn next(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            return Ok(false);
        }
        let decoded = self
            .decoder
            .decode(&self.buf[self.start..self.end])
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("bad message: {e}; closing the connection"),
                )
            })?;
        match decoded {
            Decoded::Incomplete { need } => {
                if let Some(n) = need {
                    // Grow ahead of the bytes, at most 1 MiB at a time.
                    let want = n.min(self.buffered() + (1 << 20));
                    self.grow_to(self.start + want);
                }
                Ok(false)
            }
            Decoded::Message {
                start,
                end,
                consumed,
            } => {
                let (s, e, c) = (self.start + start, self.start + end, self.start + consumed);
                if !(start <= end && end <= consumed && c <= self.end) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "decoder returned a message outside the buffer",
                    ));
                }
                self.current = (s, e);
                self.start = c;
                Ok(true)
            }
        }
    }

    /// The message found by the last successful [`next`](Self::next).
    pub(crate) fn message(&self) -> &[u8] {
        &self.buf[self.current.0..self.current.1]
    }

    /// The bytes read but not yet consumed (what follows the current message).
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Drops the first `n` unread bytes (a taken-over connection read them).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Before a turn: an empty reader borrows the thread's spare buffer, so that parked
    /// connections hold no input buffer at all.
    pub(crate) fn adopt(&mut self, spare: &mut Vec<u8>) {
        if self.buf.capacity() == 0 {
            std::mem::swap(&mut self.buf, spare);
            self.start = 0;
            self.end = 0;
        }
    }

    /// After a turn: gives the buffer back to the thread when nothing is left in it, and
    /// keeps only a right-sized copy of half a message (a slow client holds bytes, not a
    /// 16 KiB buffer).
    pub(crate) fn release(&mut self, spare: &mut Vec<u8>) {
        let left = self.buffered();
        if left == 0 {
            if spare.capacity() < self.buf.capacity() {
                std::mem::swap(&mut self.buf, spare);
            }
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        } else if left <= SMALL_PARTIAL && self.buf.capacity() > 4 * SMALL_PARTIAL {
            let rest = self.buf[self.start..self.end].to_vec();
            let old = std::mem::replace(&mut self.buf, rest);
            self.start = 0;
            self.end = left;
            self.current = (0, 0);
            if spare.capacity() < old.capacity() {
                *spare = old;
            }
        }
    }

    /// The error for a peer that closed with `n` bytes of a message buffered (framings
    /// other than lines).
    pub(crate) fn truncated(n: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the stream ended inside a message ({n} bytes of it received); closing the connection"
            ),
        )
    }

    /// At the peer's end of stream: the unterminated rest, as a last message (lines only
    /// make sense of it; other framings report a truncated message).
    pub(crate) fn take_rest(&mut self) -> Vec<u8> {
        let rest = self.buf[self.start..self.end].to_vec();
        self.start = self.end;
        rest
    }
}

impl fmt::Debug for MessageReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MessageReader")
            .field("buffered", &self.buffered())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(framing: &MessageFraming, input: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut r = MessageReader::new(framing);
        let mut src = input;
        let mut out = Vec::new();
        loop {
            while r.next()? {
                out.push(r.message().to_vec());
            }
            if r.read_from(&mut src)? == 0 {
                return Ok(out);
            }
        }
    }

    #[test]
    fn lines_keep_their_newline_and_long_lines_are_refused() {
        let f = MessageFraming::Lines { max: 8 };
        assert_eq!(
            all(&f, b"a\nbc\n").unwrap(),
            vec![b"a\n".to_vec(), b"bc\n".to_vec()]
        );
        let e = all(&f, b"0123456789\n").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn python_frames_are_cut_and_negative_lengths_refused() {
        let f = MessageFraming::Frames(Framing::python());
        let mut input = 3i32.to_le_bytes().to_vec();
        input.extend_from_slice(b"abc");
        input.extend_from_slice(&0i32.to_le_bytes());
        assert_eq!(all(&f, &input).unwrap(), vec![b"abc".to_vec(), Vec::new()]);
        let e = all(&f, &(-1i32).to_le_bytes()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
