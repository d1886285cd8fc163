//! JSON-header messages: a frame holding a JSON header, then a raw body whose length the
//! header gives.
//!
//! ```text
//! +---------------+----------------------------+------------------------+
//! | length (frame | JSON header, UTF-8,        | body: exactly the size |
//! | header)       | e.g. {"file_name": "b",    | the header announces,  |
//! |               |       "file_size": 5}      | not framed             |
//! +---------------+----------------------------+------------------------+
//! ```
//!
//! Headers are any `T: Serialize` / `T: DeserializeOwned`; [`FileHeader`] and
//! [`TransferHeader`] are the two shapes the tutorials use, [`UploadHeader`] the header of
//! the upload protocol. Bodies are streamed through a [`BodyReader`], never held whole.
//!
//! Headers are written as Python's `json.dumps` writes them (separators `", "` and `": "`,
//! `ensure_ascii`: every non-ASCII character as `\uXXXX`), so for strings, integers,
//! booleans, `null`, arrays and objects the bytes are identical to a Python peer's. (Floats
//! may differ in exponent notation: Python writes `1e+20`, we write `1e20`; both parse.)

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::body::BodyReader;
use super::frame::Framing;

/// The header of the tutorials' upload: `{"file_name": "b", "file_size": N}`, then N bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileHeader {
    /// The sender's name for the file; check it with
    /// [`sanitize_file_name`](super::sanitize_file_name) before using it.
    pub file_name: String,
    /// The body length in bytes.
    pub file_size: u64,
}

/// The header of the tutorials' remote-command reply:
/// `{"filename": "...", "total_size": N, "md5": "<32 hex digits>"}`, then N bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TransferHeader {
    /// A name for the body (the command that produced it, a file name).
    pub filename: String,
    /// The body length in bytes.
    pub total_size: u64,
    /// The MD5 of the body, as 32 lower-case hex digits.
    pub md5: String,
}

impl TransferHeader {
    /// The header describing `body`: its length and MD5.
    pub fn for_bytes(filename: impl Into<String>, body: &[u8]) -> Self {
        TransferHeader {
            filename: filename.into(),
            total_size: body.len() as u64,
            md5: super::md5_hex(body),
        }
    }
}

/// The JSON header of one upload-protocol message (the tutorials' message-and-file protocol;
/// the `upload` example speaks it):
/// `{"msg_type": "msg"}` (a text frame follows) or
/// `{"msg_type": "file", "file_name": "NAME"}` (a frame with the file's bytes follows).
/// The end of an upload is the bare frame [`UPLOAD_CLOSE`], which is not JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "msg_type", rename_all = "lowercase")]
pub enum UploadHeader {
    /// A text message follows in the next frame.
    Msg,
    /// A file follows in the next frame, whose length is the file size.
    File {
        /// The client's name for the file; check it before use.
        file_name: String,
    },
}

/// The frame that ends an upload: the bare ASCII word `close`.
pub const UPLOAD_CLOSE: &[u8] = b"close";

/// A header that says how long the body following it is.
///
/// Declare it with [`body_len!`](crate::body_len) instead of writing the impl:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use socketserver::framing::{BodyLen, Framing};
///
/// #[derive(Serialize, Deserialize)]
/// struct Put { key: String, size: u64 }
/// socketserver::body_len!(Put, size); // `size` is the body's length
///
/// let mut wire = Vec::new();
/// let put = Put { key: "k".into(), size: 3 };
/// assert_eq!(put.body_len(), 3);
/// Framing::python().write_message_bytes(&mut wire, &put, b"abc")?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait BodyLen {
    /// The number of body bytes that follow the header.
    fn body_len(&self) -> u64;
}

/// Implements [`BodyLen`](crate::framing::BodyLen) for a header type whose field gives the
/// body length: `body_len!(MyHeader, size)`. The field may be any integer type; a negative
/// or unrepresentable value counts as `u64::MAX`, which
/// [`Framing::max_body_len`](crate::framing::Framing::max_body_len) refuses.
#[macro_export]
macro_rules! body_len {
    ($header:ty, $field:ident) => {
        impl $crate::framing::BodyLen for $header {
            fn body_len(&self) -> u64 {
                ::core::convert::TryFrom::try_from(self.$field).unwrap_or(u64::MAX)
            }
        }
    };
}

impl BodyLen for FileHeader {
    fn body_len(&self) -> u64 {
        self.file_size
    }
}

impl BodyLen for TransferHeader {
    fn body_len(&self) -> u64 {
        self.total_size
    }
}

/// A [`serde_json`] formatter that writes what Python's `json.dumps(obj)` writes: `", "`
/// between items, `": "` after keys, and only printable ASCII — everything else as
/// `\uXXXX` (lower-case hex, UTF-16 surrogate pairs above U+FFFF), `ensure_ascii=True`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            w.write_all(&fragment.as_bytes()[start..i])?;
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                write!(w, "\\u{u:04x}")?;
            }
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// Serialises `value` as Python's `json.dumps(value)` would (see [`PythonFormatter`]).
///
/// ```
/// use socketserver::framing::{to_python_json, FileHeader};
///
/// let h = FileHeader { file_name: "你好.txt".into(), file_size: 5 };
/// assert_eq!(
///     to_python_json(&h)?,
///     br#"{"file_name": "\u4f60\u597d.txt", "file_size": 5}"#.to_vec(),
/// );
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
/// [`io::ErrorKind::InvalidInput`] if `value` cannot be represented as JSON (e.g. a map
/// with non-string keys).
pub fn to_python_json<T: Serialize + ?Sized>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut ser).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot encode JSON header: {e}"),
        )
    })?;
    Ok(out)
}

/// Parses a JSON header, mapping every failure to [`io::ErrorKind::InvalidData`] with a
/// message that quotes the start of the offending bytes.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] if `bytes` is not valid UTF-8 JSON of the shape `T`.
pub fn from_json_header<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        const SHOWN: usize = 64;
        let shown = &bytes[..bytes.len().min(SHOWN)];
        let more = if bytes.len() > SHOWN { "..." } else { "" };
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "invalid JSON header ({} bytes, starting {:?}{more}): {e}",
                bytes.len(),
                String::from_utf8_lossy(shown),
            ),
        )
    })
}

/// Bodies up to this size are sent with their header in one write.
const SMALL_BODY: u64 = 8 * 1024;

fn short_body(copied: u64, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("message body ended after {copied} of the {len} bytes its header declares"),
    )
}

impl Framing {
    /// Writes `header` as one frame of Python-style JSON (see [`to_python_json`]).
    ///
    /// # Errors
    /// As [`to_python_json`] and [`Framing::write_frame`].
    pub fn write_json<W: Write + ?Sized, T: Serialize + ?Sized>(
        &self,
        w: &mut W,
        header: &T,
    ) -> io::Result<()> {
        self.write_frame(w, &to_python_json(header)?)
    }

    /// Reads one frame and parses it as a JSON `T`; `Ok(None)` on a clean end of stream.
    /// Non-ASCII text may arrive raw (UTF-8) or escaped (`\u4f60`, as Python sends it).
    ///
    /// # Errors
    /// As [`Framing::read_frame_into`], and [`io::ErrorKind::InvalidData`] for bytes that
    /// are not JSON of the shape `T` (the message quotes them).
    pub fn read_json<R: Read + ?Sized, T: DeserializeOwned>(
        &self,
        r: &mut R,
    ) -> io::Result<Option<T>> {
        let mut buf = Vec::new();
        self.read_json_into(r, &mut buf)
    }

    /// As [`read_json`](Self::read_json), reading the frame into a reusable `buf`.
    ///
    /// # Errors
    /// As [`read_json`](Self::read_json).
    pub fn read_json_into<R: Read + ?Sized, T: DeserializeOwned>(
        &self,
        r: &mut R,
        buf: &mut Vec<u8>,
    ) -> io::Result<Option<T>> {
        match self.read_frame_into(r, buf)? {
            Some(_) => from_json_header(buf).map(Some),
            None => Ok(None),
        }
    }

    /// Writes a JSON-header message: `header` as a JSON frame, then exactly
    /// `header.body_len()` bytes copied from `body` (unframed). Returns the body bytes
    /// written. Bytes of `body` past the declared length are not read. A body of at most
    /// 8 KiB is read first and sent with the header in one write
    /// ([`write_message_bytes`](Self::write_message_bytes)); larger ones are streamed.
    ///
    /// # Errors
    /// As [`write_json`](Self::write_json); [`io::ErrorKind::UnexpectedEof`] if `body` ends
    /// before the declared length (the peer then waits for bytes that never come: close
    /// the connection); any error from `body` or `w`.
    pub fn write_message<W: Write + ?Sized, H: Serialize + BodyLen, B: Read>(
        &self,
        w: &mut W,
        header: &H,
        body: B,
    ) -> io::Result<u64> {
        if header.body_len() <= SMALL_BODY {
            let mut small = Vec::new();
            body.take(header.body_len()).read_to_end(&mut small)?;
            if (small.len() as u64) == header.body_len() {
                return self
                    .write_message_bytes(w, header, &small)
                    .map(|()| small.len() as u64);
            }
            // Short: send what there is, as the streaming path would, then fail.
            return self
                .write_json(w, header)
                .and_then(|()| w.write_all(&small))
                .and_then(|()| Err(short_body(small.len() as u64, header.body_len())));
        }
        let len = header.body_len();
        self.write_json(w, header)?;
        let copied = io::copy(&mut body.take(len), w)?;
        if copied < len {
            return Err(short_body(copied, len));
        }
        Ok(copied)
    }

    /// Writes a JSON-header message whose body is in memory: length prefix, header and body
    /// in **one** `write_vectored` call (`writev(2)` on a socket) where the writer takes it
    /// all, so a small message is one segment. The header must declare `body.len()`.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidInput`] if `header.body_len()` is not `body.len()`, or the
    /// header is over the frame limit (nothing is written); any error from `w`.
    pub fn write_message_bytes<W: Write + ?Sized, H: Serialize + BodyLen>(
        &self,
        w: &mut W,
        header: &H,
        body: &[u8],
    ) -> io::Result<()> {
        if header.body_len() != body.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the header declares a body of {} bytes, {} given",
                    header.body_len(),
                    body.len()
                ),
            ));
        }
        let json = to_python_json(header)?;
        self.check_frame_len(json.len() as u64)?;
        let prefix = self.prefix().encode(json.len() as u64)?;
        let prefix = &prefix[..self.prefix().header_len()];
        super::write_all_vectored(
            w,
            &mut [
                std::io::IoSlice::new(prefix),
                std::io::IoSlice::new(&json),
                std::io::IoSlice::new(body),
            ],
        )
    }

    /// Reads a JSON-header message whose body is small enough to hold: the header and the
    /// whole body in a `Vec`. The body must fit the frame limit
    /// ([`max_frame_len`](Self::max_frame_len), 16 MiB by default) — checked before a
    /// byte of it is read or allocated; stream larger ones with
    /// [`read_message`](Self::read_message). `Ok(None)` on a clean end of stream before the
    /// header.
    ///
    /// ```
    /// use socketserver::framing::{Framing, TransferHeader};
    ///
    /// let framing = Framing::python();
    /// let mut wire = Vec::new();
    /// framing.write_message_bytes(&mut wire, &TransferHeader::for_bytes("date", b"Mon\n"), b"Mon\n")?;
    /// let (header, body) = framing
    ///     .read_message_to_vec::<_, TransferHeader>(&mut &wire[..])?
    ///     .unwrap();
    /// assert_eq!((header.filename.as_str(), body.as_slice()), ("date", &b"Mon\n"[..]));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`read_message`](Self::read_message); [`io::ErrorKind::InvalidData`] if the
    /// declared body is over the frame limit.
    pub fn read_message_to_vec<R: Read + ?Sized, H: DeserializeOwned + BodyLen>(
        &self,
        r: &mut R,
    ) -> io::Result<Option<(H, Vec<u8>)>> {
        let Some((header, mut body)) = self.read_message::<R, H>(r)? else {
            return Ok(None);
        };
        let limit = self.get_max_frame_len();
        if body.len() > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "message body of {} bytes is over the limit of {limit} bytes for a body \
                     read into memory (Framing::max_frame_len); stream it with read_message",
                    body.len()
                ),
            ));
        }
        let mut bytes = Vec::with_capacity(body.len() as usize);
        body.read_to_end(&mut bytes)?;
        Ok(Some((header, bytes)))
    }

    /// Reads a JSON-header message: the header, and a [`BodyReader`] over exactly
    /// `header.body_len()` bytes of `r`, to be streamed (never buffered whole). A header
    /// declaring more than [`max_body_len`](Self::max_body_len) (default 2^31 − 1) is
    /// refused before the body is touched. For a small body wanted in memory, see
    /// [`read_message_to_vec`](Self::read_message_to_vec).
    /// `Ok(None)` on a clean end of stream before the header.
    ///
    /// ```
    /// use std::io::Read;
    /// use socketserver::framing::{FileHeader, Framing};
    ///
    /// let framing = Framing::python();
    /// let mut wire = Vec::new();
    /// let header = FileHeader { file_name: "b".into(), file_size: 5 };
    /// framing.write_message(&mut wire, &header, &b"hello"[..])?;
    ///
    /// let mut r = &wire[..];
    /// let (got, mut body) = framing.read_message::<_, FileHeader>(&mut r)?.unwrap();
    /// assert_eq!(got, header);
    /// let mut bytes = Vec::new();
    /// body.read_to_end(&mut bytes)?;
    /// assert_eq!(bytes, b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`read_json`](Self::read_json). Reading the body fails with
    /// [`io::ErrorKind::UnexpectedEof`] if the stream ends before the declared length.
    pub fn read_message<'r, R: Read + ?Sized, H: DeserializeOwned + BodyLen>(
        &self,
        r: &'r mut R,
    ) -> io::Result<Option<(H, BodyReader<&'r mut R>)>> {
        let Some(header) = self.read_json::<R, H>(r)? else {
            return Ok(None);
        };
        let len = header.body_len();
        let limit = self.get_max_body_len();
        if len > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "message body of {len} bytes declared, over the limit of {limit} bytes \
                     (Framing::max_body_len)"
                ),
            ));
        }
        Ok(Some((header, BodyReader::new(r, len))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_formatting_of_escapes() {
        // json.dumps(["a\"\\\n\x01\x7f", "\U0001f600", {"k": [1, None, True]}])
        let v = serde_json::json!(["a\"\\\n\u{1}\u{7f}", "\u{1f600}", {"k": [1, null, true]}]);
        assert_eq!(
            String::from_utf8(to_python_json(&v).unwrap()).unwrap(),
            r#"["a\"\\\n\u0001\u007f", "\ud83d\ude00", {"k": [1, null, true]}]"#
        );
    }

    #[test]
    fn upload_header_shapes() {
        assert_eq!(
            to_python_json(&UploadHeader::Msg).unwrap(),
            br#"{"msg_type": "msg"}"#
        );
        let f = UploadHeader::File {
            file_name: "a.txt".into(),
        };
        assert_eq!(
            to_python_json(&f).unwrap(),
            br#"{"msg_type": "file", "file_name": "a.txt"}"#
        );
    }
}
