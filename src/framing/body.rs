//! [`BodyReader`]: a reader of exactly `len` bytes, for bodies whose size a header gave.

use std::io::{self, BufRead, Read};

/// Reads exactly the `len` bytes of a body whose length a header announced, and no more.
///
/// Unlike [`Read::take`], it never reports a clean end of stream early: if the inner stream
/// ends before `len` bytes have been read, `read` fails with
/// [`io::ErrorKind::UnexpectedEof`] (naming how many bytes of how many arrived), so
/// `io::copy(&mut body, &mut file)` cannot silently store a truncated file. Once `len` bytes
/// have been read, `read` returns `Ok(0)` and the inner stream is positioned at the next
/// message.
///
/// ```
/// use std::io::Read;
/// use socketserver::framing::BodyReader;
///
/// let mut wire = &b"abcdefNEXT"[..];
/// let mut body = BodyReader::new(&mut wire, 6);
/// let mut s = String::new();
/// body.read_to_string(&mut s)?;
/// assert_eq!(s, "abcdef");
/// assert_eq!(wire, b"NEXT"); // nothing read past the body
///
/// let mut short = BodyReader::new(&b"abc"[..], 6);
/// let err = short.read_to_end(&mut Vec::new()).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct BodyReader<R> {
    inner: R,
    len: u64,
    remaining: u64,
}

impl<R: Read> BodyReader<R> {
    /// A reader of the next `len` bytes of `inner`.
    pub fn new(inner: R, len: u64) -> Self {
        BodyReader {
            inner,
            len,
            remaining: len,
        }
    }

    /// The declared body length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the declared body length is zero.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes of the body are still to be read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Reads and discards the rest of the body, so that the inner stream is positioned at the
    /// next message; returns how many bytes were skipped.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the stream ends first; any error from the reader.
    pub fn skip_rest(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// Unwraps the inner reader, wherever it is positioned.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

fn eof_error(len: u64, remaining: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "stream ended inside a body ({} of {len} bytes)",
            len - remaining
        ),
    )
}

impl<R: Read> Read for BodyReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let max = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(eof_error(self.len, self.remaining));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for BodyReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.remaining == 0 {
            return Ok(&[]);
        }
        let (len, remaining) = (self.len, self.remaining);
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            return Err(eof_error(len, remaining));
        }
        let max = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        Ok(&buf[..max])
    }

    fn consume(&mut self, amt: usize) {
        let amt = usize::try_from(self.remaining).map_or(amt, |r| r.min(amt));
        self.inner.consume(amt);
        self.remaining -= amt as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bufread_stops_at_len() {
        let mut inner = io::BufReader::new(&b"hello world"[..]);
        let mut body = BodyReader::new(&mut inner, 5);
        let mut out = Vec::new();
        body.read_until(b' ', &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(body.remaining(), 0);
        let mut rest = String::new();
        inner.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, " world");
    }

    #[test]
    fn zero_len_body_reads_nothing() {
        let mut body = BodyReader::new(&b""[..], 0);
        assert_eq!(body.read(&mut [0u8; 4]).unwrap(), 0);
    }
}
