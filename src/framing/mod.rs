//! Framing: the sticky-packet (粘包) toolkit.
//!
//! TCP carries a byte stream, not messages: two `send`s may arrive in one `recv`, one
//! `send` may arrive in pieces. The usual fix, and the one the Python tutorials use, is to
//! put a fixed-size length header before each message:
//!
//! ```
//! use socketserver::framing::Framing;
//!
//! let framing = Framing::python(); // struct.pack('i', n): 4 bytes, little-endian, signed
//! let mut wire = Vec::new();       // any `Write`: a TcpStream, a handler's wfile, ...
//! framing.write_frame(&mut wire, b"hello")?;
//! framing.write_frame(&mut wire, b"world")?;
//! assert_eq!(&wire[..9], b"\x05\0\0\0hello");
//!
//! // Both frames are in one "recv"; the reader splits them again.
//! let mut rfile = &wire[..];       // any `Read`: a TcpStream, a handler's rfile, ...
//! let mut buf = Vec::new();        // reused: no allocation per frame
//! while let Some(n) = framing.read_frame_into(&mut rfile, &mut buf)? {
//!     println!("{n} bytes: {:?}", String::from_utf8_lossy(&buf));
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Everything here is generic over [`std::io::Read`] / [`std::io::Write`], so the same calls
//! work in a server handler (its buffered `rfile` / `wfile`), on a plain client
//! `TcpStream`, and on an in-memory `Cursor` in tests.
//!
//! # The pieces
//!
//! | concept | items | file |
//! |---|---|---|
//! | length-prefixed frames | [`Framing`], [`LengthPrefix`], [`FrameReader`] | `frame.rs` |
//! | a body of known length, streamed | [`BodyReader`] | `body.rs` |
//! | JSON header + body | [`Framing::write_message`], [`Framing::write_message_bytes`], [`Framing::read_message`], [`Framing::read_message_to_vec`], [`BodyLen`] and [`body_len!`](crate::body_len), [`FileHeader`], [`TransferHeader`], [`UploadHeader`], [`to_python_json`] | `json.rs` |
//! | file transfer | [`Framing::send_file`], [`Framing::send_file_message`], [`FileReceiver`], [`md5_hex`] | `file.rs` |
//! | peer-supplied file names | [`sanitize_file_name`], [`NameError`] | `name.rs` |
//! | temporary files of transfers | [`remove_partial_files`], [`remove_stale_partial_files`] | `partial.rs` |
//!
//! ## Frames
//! [`Framing`] is a `Copy` value: a header format ([`LengthPrefix`]; default 4-byte
//! big-endian unsigned, [`Framing::python`] for the tutorials' `struct.pack('i', n)`, also
//! 2- and 8-byte variants) and a largest frame (default 16 MiB). A header announcing more,
//! or a negative length, is refused with [`std::io::ErrorKind::InvalidData`] before any
//! memory is allocated for it. End of stream between frames is `Ok(None)`; inside a frame it
//! is [`std::io::ErrorKind::UnexpectedEof`]. A frame is written with one `write` call where
//! the writer allows, so a small frame is never split into a header segment and a payload
//! segment. For a body too large to buffer, [`Framing::read_header`] returns just the
//! length and a [`BodyReader`] streams exactly that many bytes.
//!
//! ## JSON-header messages
//! A frame holding a JSON header, then a raw body of the length the header gives:
//!
//! ```
//! use std::io::Read;
//! use socketserver::framing::{Framing, TransferHeader};
//!
//! let framing = Framing::python();
//! let output = b"total 0\n";
//! let mut wire = Vec::new();
//! framing.write_message(&mut wire, &TransferHeader::for_bytes("ls -l", output), &output[..])?;
//! assert!(wire[4..].starts_with(br#"{"filename": "ls -l", "total_size": 8, "md5": "#));
//!
//! let mut rfile = &wire[..];
//! let (header, mut body) = framing.read_message::<_, TransferHeader>(&mut rfile)?.unwrap();
//! let mut text = String::new();
//! body.read_to_string(&mut text)?;   // stops at total_size bytes
//! assert_eq!((header.total_size, text.as_str()), (8, "total 0\n"));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Headers are written byte for byte as Python's `json.dumps` writes them
//! ([`PythonFormatter`]); escaped non-ASCII (`"\u4f60"`) and raw UTF-8 are both read.
//!
//! ## Files
//! [`Framing::send_file`] streams a file as a frame through a 64 KiB buffer (measured
//! faster than [`std::io::copy`], which never uses `sendfile` from a file to a socket and
//! copies through 8 KiB). [`FileReceiver`] stores a received body under a
//! checked name: into a temporary file, `fsync`ed, checked against an MD5 if one is given,
//! and renamed into place only when complete, without ever replacing an existing file
//! unless asked. A transfer that fails leaves nothing behind. A process ended by a signal
//! does not run the destructor that removes a temporary file: a SIGTERM handler calls
//! [`remove_partial_files`], and [`remove_stale_partial_files`] at start removes the files of
//! writers that died (SIGKILL, a crash).
//!
//! # Trade-offs
//! After any read error the stream is out of sync (the rest of a bad frame is not skipped):
//! close the connection, as the protocol asks. Nothing here sets timeouts; set them on the
//! socket (`TcpStream::set_read_timeout`), and they surface as `WouldBlock`/`TimedOut`.
//!
//! # Fuzzing
//! `fuzz/` holds cargo-fuzz targets for the frame decoder, the JSON header reader and the
//! file-name check. It is a separate crate (not part of the workspace, not run in CI) and
//! needs a nightly compiler, or stable with `RUSTC_BOOTSTRAP=1`:
//!
//! ```text
//! cargo install cargo-fuzz
//! cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run frame_decode -- -max_total_time=60
//! ```
//!
//! See `fuzz/README.md` for the targets.

mod body;
mod file;
mod frame;
mod json;
mod message;
mod name;
mod partial;
mod sys;

pub use body::BodyReader;
pub use file::{
    DEFAULT_MAX_FILE_SIZE, FileReceiver, ReceiveError, Received, TRANSFER_BUF_LEN, md5_hex,
};
pub use frame::{
    DEFAULT_MAX_BODY_LEN, DEFAULT_MAX_FRAME_LEN, FrameReader, Framing, LengthPrefix,
    write_all_vectored,
};
pub use json::{
    BodyLen, FileHeader, PythonFormatter, TransferHeader, UPLOAD_CLOSE, UploadHeader,
    from_json_header, to_python_json,
};
pub(crate) use message::MessageReader;
pub use message::{DEFAULT_MAX_LINE, Decoded, Decoder, MessageFraming};
pub use name::{MAX_FILE_NAME_LEN, NameError, sanitize_file_name};
pub use partial::{remove_partial_files, remove_stale_partial_files};
