//! Length-prefixed frames: a fixed-size length header, then that many payload bytes.
//!
//! [`Framing`] is the whole configuration (which header, how large a frame may be); it is
//! `Copy`, holds no buffers, and works over any [`Read`] / [`Write`]: a handler's buffered
//! `rfile` / `wfile`, a plain [`TcpStream`](std::net::TcpStream), a [`Cursor`](std::io::Cursor).
//! [`FrameReader`] adds a reusable buffer on top, for a loop that reads frame after frame
//! without allocating.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};

/// The default largest payload a [`Framing`] reads or writes: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u64 = 16 * 1024 * 1024;

/// Default largest body of a JSON-header message ([`Framing::max_body_len`]): 2^31 − 1
/// bytes, the largest length a Python peer's `struct.pack('i', n)` can carry, and
/// [`FileReceiver`](super::FileReceiver)'s default `max_size`.
pub const DEFAULT_MAX_BODY_LEN: u64 = i32::MAX as u64;

/// Payloads up to this many bytes are copied behind their header into one stack buffer and
/// handed to the writer in one `write` call, so that even a writer without real vectored I/O
/// puts a small frame on the wire in one piece. Larger payloads go through `write_vectored`.
const COALESCE_LEN: usize = 8 * 1024;

/// Until this many bytes have actually arrived, a frame buffer is not grown past it: a peer
/// that announces a large frame and then sends nothing costs us at most this much memory.
const PREALLOC_LEN: u64 = 1024 * 1024;

/// How a frame's length is written on the wire.
///
/// The crate default is [`LengthPrefix::U32Be`] (network byte order). The Python tutorials
/// use `struct.pack('i', n)`, which is [`LengthPrefix::I32Le`] on every platform we target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LengthPrefix {
    /// 2 bytes, big-endian, unsigned (`struct.pack('!H', n)`): at most 65 535 bytes.
    U16Be,
    /// 4 bytes, big-endian, unsigned (`struct.pack('!I', n)`): the default.
    #[default]
    U32Be,
    /// 4 bytes, little-endian, signed (`struct.pack('i', n)`): Python's native `'i'` on
    /// x86 and ARM, the tutorials' format. A negative length is rejected as bad input.
    I32Le,
    /// 8 bytes, big-endian, unsigned (`struct.pack('!Q', n)`).
    U64Be,
}

impl LengthPrefix {
    /// Every header format, for code (and tests) that wants to try them all.
    pub const ALL: [LengthPrefix; 4] = [
        LengthPrefix::U16Be,
        LengthPrefix::U32Be,
        LengthPrefix::I32Le,
        LengthPrefix::U64Be,
    ];

    /// The size of the header in bytes: 2, 4 or 8.
    pub const fn header_len(self) -> usize {
        match self {
            LengthPrefix::U16Be => 2,
            LengthPrefix::U32Be | LengthPrefix::I32Le => 4,
            LengthPrefix::U64Be => 8,
        }
    }

    /// The largest length this header can carry (65 535, 2^32-1, 2^31-1 or 2^64-1).
    pub const fn max_encodable(self) -> u64 {
        match self {
            LengthPrefix::U16Be => u16::MAX as u64,
            LengthPrefix::U32Be => u32::MAX as u64,
            LengthPrefix::I32Le => i32::MAX as u64,
            LengthPrefix::U64Be => u64::MAX,
        }
    }

    /// Encodes `len` into the first [`header_len`](Self::header_len) bytes of the result.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `len` is over [`max_encodable`](Self::max_encodable).
    pub fn encode(self, len: u64) -> io::Result<[u8; 8]> {
        if len > self.max_encodable() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "frame length {len} does not fit a {self} header (at most {})",
                    self.max_encodable()
                ),
            ));
        }
        let mut out = [0u8; 8];
        // The range check above makes every narrowing cast below lossless.
        match self {
            LengthPrefix::U16Be => out[..2].copy_from_slice(&(len as u16).to_be_bytes()),
            LengthPrefix::U32Be => out[..4].copy_from_slice(&(len as u32).to_be_bytes()),
            LengthPrefix::I32Le => out[..4].copy_from_slice(&(len as i32).to_le_bytes()),
            LengthPrefix::U64Be => out.copy_from_slice(&len.to_be_bytes()),
        }
        Ok(out)
    }

    /// Decodes a header (`header.len()` must be [`header_len`](Self::header_len); extra bytes
    /// are ignored). Returns the signed value so that a negative `I32Le` length can be
    /// reported as such; it is not yet checked against any limit.
    fn decode(self, header: &[u8]) -> i128 {
        let mut b8 = [0u8; 8];
        let n = self.header_len();
        b8[..n].copy_from_slice(&header[..n]);
        match self {
            LengthPrefix::U16Be => i128::from(u16::from_be_bytes([b8[0], b8[1]])),
            LengthPrefix::U32Be => i128::from(u32::from_be_bytes([b8[0], b8[1], b8[2], b8[3]])),
            LengthPrefix::I32Le => i128::from(i32::from_le_bytes([b8[0], b8[1], b8[2], b8[3]])),
            LengthPrefix::U64Be => i128::from(u64::from_be_bytes(b8)),
        }
    }
}

impl fmt::Display for LengthPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LengthPrefix::U16Be => "2-byte big-endian unsigned",
            LengthPrefix::U32Be => "4-byte big-endian unsigned",
            LengthPrefix::I32Le => "4-byte little-endian signed",
            LengthPrefix::U64Be => "8-byte big-endian unsigned",
        })
    }
}

/// A length-prefixed framing configuration: the header format and the largest frame.
///
/// | knob | default | builder |
/// |---|---|---|
/// | header format | [`LengthPrefix::U32Be`] | [`Framing::with_prefix`], [`Framing::python`] |
/// | largest frame | [`DEFAULT_MAX_FRAME_LEN`] (16 MiB) | [`Framing::max_frame_len`] |
/// | largest message body (streamed) | [`DEFAULT_MAX_BODY_LEN`] (2^31 − 1) | [`Framing::max_body_len`] |
///
/// Methods for the caller: [`write_frame`](Self::write_frame),
/// [`read_frame_into`](Self::read_frame_into), [`read_frame`](Self::read_frame), and for
/// bodies too large to buffer, [`write_header`](Self::write_header) /
/// [`read_header`](Self::read_header) followed by streaming the body yourself.
///
/// The limit is checked on both sides: a header announcing more than
/// [`max_frame_len`](Self::get_max_frame_len) bytes (or a negative length) is rejected with
/// [`io::ErrorKind::InvalidData`] before a single payload byte is read or buffered, and
/// writing a larger payload fails with [`io::ErrorKind::InvalidInput`] before anything is
/// written. After an error on the read side the stream is out of sync: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Framing {
    prefix: LengthPrefix,
    max_frame_len: u64,
    max_body_len: u64,
}

impl Default for Framing {
    fn default() -> Self {
        Framing::new()
    }
}

impl Framing {
    /// The crate default: 4-byte big-endian unsigned header, 16 MiB limit.
    pub const fn new() -> Self {
        Framing {
            prefix: LengthPrefix::U32Be,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_body_len: DEFAULT_MAX_BODY_LEN,
        }
    }

    /// The Python tutorials' framing, `struct.pack('i', n)`: 4-byte little-endian signed
    /// header ([`LengthPrefix::I32Le`]), 16 MiB limit.
    pub const fn python() -> Self {
        Framing::with_prefix(LengthPrefix::I32Le)
    }

    /// Framing with the given header format and the default 16 MiB limit.
    pub const fn with_prefix(prefix: LengthPrefix) -> Self {
        Framing {
            prefix,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_body_len: DEFAULT_MAX_BODY_LEN,
        }
    }

    /// Sets the largest frame, in bytes, that is read or written (default 16 MiB). It is
    /// further capped by what the header can carry. For a body that is streamed rather than
    /// buffered (a file), use a copy with a larger limit: `framing.max_frame_len(1 << 31)`.
    #[must_use]
    pub const fn max_frame_len(mut self, max: u64) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets the largest body a JSON-header message may declare
    /// ([`read_message`](Self::read_message)); default [`DEFAULT_MAX_BODY_LEN`]. A header
    /// declaring more is refused with [`io::ErrorKind::InvalidData`] before a byte of the
    /// body is read. Bodies read into memory
    /// ([`read_message_to_vec`](Self::read_message_to_vec)) are bounded by
    /// [`max_frame_len`](Self::max_frame_len) instead.
    #[must_use]
    pub const fn max_body_len(mut self, max: u64) -> Self {
        self.max_body_len = max;
        self
    }

    /// The largest message body accepted.
    pub const fn get_max_body_len(&self) -> u64 {
        self.max_body_len
    }

    /// The header format.
    pub const fn prefix(&self) -> LengthPrefix {
        self.prefix
    }

    /// The largest frame accepted: the configured limit, capped by the header format.
    pub const fn get_max_frame_len(&self) -> u64 {
        let enc = self.prefix.max_encodable();
        if self.max_frame_len < enc {
            self.max_frame_len
        } else {
            enc
        }
    }

    pub(crate) fn check_frame_len(&self, len: u64) -> io::Result<()> {
        self.check_write_len(len)
    }

    fn check_write_len(&self, len: u64) -> io::Result<()> {
        let limit = self.get_max_frame_len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame length {len} exceeds the limit of {limit} bytes"),
            ));
        }
        Ok(())
    }

    /// Writes only a header announcing `len` payload bytes; the caller then writes exactly
    /// `len` bytes (e.g. with [`io::copy`]). For small payloads prefer
    /// [`write_frame`](Self::write_frame), which sends header and payload together.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `len` is over the limit (nothing is written), or
    /// any error from `w`.
    pub fn write_header<W: Write + ?Sized>(&self, w: &mut W, len: u64) -> io::Result<()> {
        self.check_write_len(len)?;
        let header = self.prefix.encode(len)?;
        w.write_all(&header[..self.prefix.header_len()])
    }

    /// Writes one frame: header then `payload`, in one `write` call where the writer allows.
    ///
    /// Payloads up to 8 KiB are copied behind the header in a stack buffer and written with
    /// one `write_all`; larger ones go through [`Write::write_vectored`], looping over partial
    /// writes until every byte is out. It does not flush: a `BufWriter` keeps the frame until
    /// you call `flush`, which lets several small frames leave in one segment.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if the payload is over the limit (nothing is written);
    /// [`io::ErrorKind::WriteZero`] if the writer stops accepting bytes; any error from `w`.
    pub fn write_frame<W: Write + ?Sized>(&self, w: &mut W, payload: &[u8]) -> io::Result<()> {
        let len = payload.len() as u64;
        self.check_write_len(len)?;
        let header = self.prefix.encode(len)?;
        let header = &header[..self.prefix.header_len()];
        // Stack buffers in four sizes, so a 64-byte frame does not pay for zeroing 8 KiB.
        match payload.len() {
            0..=248 => write_coalesced::<256, W>(w, header, payload),
            249..=2040 => write_coalesced::<2048, W>(w, header, payload),
            2041..=4096 => write_coalesced::<4104, W>(w, header, payload),
            4097..=COALESCE_LEN => write_coalesced::<{ COALESCE_LEN + 8 }, W>(w, header, payload),
            _ => write_all_vectored(w, &mut [IoSlice::new(header), IoSlice::new(payload)]),
        }
    }

    /// Reads one frame header and returns the payload length it announces, checked against
    /// the limit. The caller then reads exactly that many bytes, e.g. through
    /// [`BodyReader`](super::BodyReader), to stream a body too large to buffer.
    ///
    /// Returns `Ok(None)` on a clean end of stream (no byte of a new header arrived).
    ///
    /// # Errors
    /// - [`io::ErrorKind::UnexpectedEof`] if the stream ends inside the header;
    /// - [`io::ErrorKind::InvalidData`] if the length is negative or over the limit (the
    ///   message names the length and the limit); nothing past the header has been read;
    /// - any error from `r`.
    pub fn read_header<R: Read + ?Sized>(&self, r: &mut R) -> io::Result<Option<u64>> {
        let n = self.prefix.header_len();
        let mut header = [0u8; 8];
        let mut got = 0;
        while got < n {
            match r.read(&mut header[got..n]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("stream ended inside a frame header ({got} of {n} bytes)"),
                    ));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = self.prefix.decode(&header[..n]);
        let limit = self.get_max_frame_len();
        if len < 0 {
            log::debug!("rejecting negative frame length {len}");
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("negative frame length {len} (the limit is {limit} bytes)"),
            ));
        }
        if len > i128::from(limit) {
            log::debug!("rejecting frame length {len} over the limit {limit}");
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame length {len} exceeds the limit of {limit} bytes"),
            ));
        }
        // 0 <= len <= limit <= u64::MAX, so the cast is lossless.
        Ok(Some(len as u64))
    }

    /// Reads one frame into `buf`, replacing its contents and reusing its capacity, and
    /// returns the payload length; `Ok(None)` on a clean end of stream between frames.
    ///
    /// The header is checked against the limit before `buf` grows, and `buf` is grown only
    /// as bytes arrive (at most 1 MiB ahead of them), so a hostile header costs no memory.
    ///
    /// # Errors
    /// As [`read_header`](Self::read_header), plus [`io::ErrorKind::UnexpectedEof`] if the
    /// stream ends inside the payload. On error `buf` holds whatever partial payload arrived.
    pub fn read_frame_into<R: Read + ?Sized>(
        &self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        buf.clear();
        let Some(len) = self.read_header(r)? else {
            return Ok(None);
        };
        // `len` is at most the limit; on a 32-bit target a limit over usize::MAX could still
        // not be buffered, so say so instead of truncating.
        let Ok(len_usize) = usize::try_from(len) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame length {len} does not fit in memory on this platform"),
            ));
        };
        let ahead = usize::try_from(len.min(PREALLOC_LEN)).unwrap_or(0);
        buf.reserve(ahead);
        let got = r.take(len).read_to_end(buf)?;
        if got < len_usize {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("stream ended inside a frame payload ({got} of {len} bytes)"),
            ));
        }
        Ok(Some(len_usize))
    }

    /// Reads one frame into a new `Vec`; `Ok(None)` on a clean end of stream. In a loop,
    /// prefer [`read_frame_into`](Self::read_frame_into) or [`FrameReader`], which reuse
    /// one buffer.
    ///
    /// # Errors
    /// As [`read_frame_into`](Self::read_frame_into).
    pub fn read_frame<R: Read + ?Sized>(&self, r: &mut R) -> io::Result<Option<Vec<u8>>> {
        let mut buf = Vec::new();
        Ok(self.read_frame_into(r, &mut buf)?.map(|_| buf))
    }
}

/// Copies `header` and `payload` (together at most `N` bytes) into one stack buffer and
/// writes it with one `write_all`.
fn write_coalesced<const N: usize, W: Write + ?Sized>(
    w: &mut W,
    header: &[u8],
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = [0u8; N];
    let total = header.len() + payload.len();
    buf[..header.len()].copy_from_slice(header);
    buf[header.len()..total].copy_from_slice(payload);
    w.write_all(&buf[..total])
}

/// Writes every byte of `bufs` with [`Write::write_vectored`], advancing past partial writes
/// and retrying on [`io::ErrorKind::Interrupted`] (std's `write_all_vectored` is unstable).
///
/// # Errors
/// [`io::ErrorKind::WriteZero`] if the writer accepts no byte; any error from `w`.
pub fn write_all_vectored<W: Write + ?Sized>(
    w: &mut W,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write whole frame",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A reader of frames with one reusable buffer: no allocation per frame once the buffer
/// has grown to the largest frame seen.
///
/// ```
/// use socketserver::framing::{FrameReader, Framing};
///
/// let mut wire = Vec::new();
/// Framing::python().write_frame(&mut wire, b"hello")?;
/// Framing::python().write_frame(&mut wire, b"")?;
///
/// let mut frames = FrameReader::new(Framing::python(), &wire[..]);
/// assert_eq!(frames.next_frame()?, Some(&b"hello"[..]));
/// assert_eq!(frames.next_frame()?, Some(&b""[..]));
/// assert_eq!(frames.next_frame()?, None); // clean end of stream
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FrameReader<R> {
    framing: Framing,
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> FrameReader<R> {
    /// Wraps `inner`; the buffer starts empty and grows to the largest frame read.
    pub fn new(framing: Framing, inner: R) -> Self {
        FrameReader {
            framing,
            inner,
            buf: Vec::new(),
        }
    }

    /// Reads the next frame and lends its payload until the next call; `Ok(None)` on a clean
    /// end of stream.
    ///
    /// # Errors
    /// As [`Framing::read_frame_into`].
    pub fn next_frame(&mut self) -> io::Result<Option<&[u8]>> {
        match self
            .framing
            .read_frame_into(&mut self.inner, &mut self.buf)?
        {
            Some(_) => Ok(Some(&self.buf)),
            None => Ok(None),
        }
    }

    /// The framing in use.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The wrapped reader, e.g. to stream a body after [`Framing::read_header`].
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Unwraps the reader, dropping the buffer.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_python_struct_pack() {
        // struct.pack('i', 5) == b'\x05\x00\x00\x00'; struct.pack('!I', 5) == b'\x00\x00\x00\x05'
        assert_eq!(&LengthPrefix::I32Le.encode(5).unwrap()[..4], b"\x05\0\0\0");
        assert_eq!(&LengthPrefix::U32Be.encode(5).unwrap()[..4], b"\0\0\0\x05");
        assert!(LengthPrefix::U16Be.encode(65_536).is_err());
        assert!(LengthPrefix::I32Le.encode(1 << 31).is_err());
    }

    #[test]
    fn negative_i32le_decodes_negative() {
        assert_eq!(LengthPrefix::I32Le.decode(&(-1i32).to_le_bytes()), -1);
    }
}
