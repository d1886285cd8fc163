//! JSON-header messages without hand-written limits (issue 13.9): a body limit with a
//! default, small bodies read into a `Vec`, header and small body in one write, and the
//! body length declared with `body_len!`.

use std::io::{self, IoSlice, Read, Write};

use serde::{Deserialize, Serialize};
use socketserver::framing::{
    BodyLen, DEFAULT_MAX_BODY_LEN, FileHeader, Framing, TransferHeader, to_python_json,
};

/// A writer that counts the calls that reach it.
#[derive(Default)]
struct Calls {
    bytes: Vec<u8>,
    calls: usize,
}

impl Write for Calls {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls += 1;
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls += 1;
        let mut n = 0;
        for b in bufs {
            self.bytes.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A frame holding `header`, then `body`.
fn wire(framing: Framing, header: &impl Serialize, body: &[u8]) -> Vec<u8> {
    let mut w = Vec::new();
    framing.write_json(&mut w, header).unwrap();
    w.extend_from_slice(body);
    w
}

#[test]
fn a_body_over_the_limit_is_refused_before_a_byte_of_it_is_read() {
    let framing = Framing::python().max_body_len(10);
    let header = FileHeader {
        file_name: "big".into(),
        file_size: 11,
    };
    let bytes = wire(framing, &header, b"01234567890");
    let mut r = &bytes[..];
    let err = framing
        .read_message::<_, FileHeader>(&mut r)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains("11 bytes declared, over the limit of 10"),
        "{err}"
    );
    assert_eq!(r, b"01234567890", "the body was not touched");
}

#[test]
fn the_default_body_limit_refuses_a_header_declaring_more_than_2_gib() {
    let framing = Framing::python();
    assert_eq!(framing.get_max_body_len(), DEFAULT_MAX_BODY_LEN);
    let header = FileHeader {
        file_name: "huge".into(),
        file_size: 1 << 40,
    };
    let bytes = wire(framing, &header, b"");
    let err = framing
        .read_message::<_, FileHeader>(&mut &bytes[..])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
}

#[test]
fn a_small_body_is_read_into_a_vec_and_a_big_one_refused() {
    let framing = Framing::python().max_frame_len(90); // the header is 78 bytes
    let small = TransferHeader::for_bytes("ok", b"hello");
    let mut bytes = wire(framing, &small, b"hello");
    bytes.extend_from_slice(b"NEXT");
    let mut r = &bytes[..];
    let (h, body) = framing
        .read_message_to_vec::<_, TransferHeader>(&mut r)
        .unwrap()
        .unwrap();
    assert_eq!((h, body.as_slice()), (small, &b"hello"[..]));
    assert_eq!(r, b"NEXT", "nothing read past the body");
    // 100 bytes: under max_body_len, over the in-memory limit (max_frame_len).
    let big = TransferHeader::for_bytes("big", &[b'x'; 100]);
    let bytes = wire(framing, &big, &[b'x'; 100]);
    let err = framing
        .read_message_to_vec::<_, TransferHeader>(&mut &bytes[..])
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("max_frame_len"), "{err}");
    assert!(
        framing
            .read_message_to_vec::<_, TransferHeader>(&mut &b""[..])
            .unwrap()
            .is_none(),
        "a clean end of stream is Ok(None)"
    );
}

#[test]
fn header_and_small_body_leave_in_one_write() {
    let framing = Framing::python();
    let body = b"total 0\n";
    let header = TransferHeader::for_bytes("ls", body);
    let mut w = Calls::default();
    framing.write_message_bytes(&mut w, &header, body).unwrap();
    assert_eq!(w.calls, 1, "write_message_bytes");
    let expected = wire(framing, &header, body);
    assert_eq!(w.bytes, expected);
    let mut w = Calls::default();
    framing.write_message(&mut w, &header, &body[..]).unwrap();
    assert_eq!(w.calls, 1, "write_message with a small body");
    assert_eq!(w.bytes, expected);
    // A header that lies about the body is refused, nothing written.
    let mut w = Calls::default();
    let err = framing
        .write_message_bytes(&mut w, &header, b"short")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(w.calls, 0);
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Put {
    key: String,
    size: i32,
}
socketserver::body_len!(Put, size);

#[test]
fn body_len_declares_the_length_from_a_field_and_a_negative_one_is_refused() {
    let framing = Framing::python();
    let put = Put {
        key: "k".into(),
        size: 3,
    };
    assert_eq!(put.body_len(), 3);
    let mut w = Vec::new();
    framing.write_message(&mut w, &put, &b"abc"[..]).unwrap();
    let mut r = &w[..];
    let (got, mut body) = framing.read_message::<_, Put>(&mut r).unwrap().unwrap();
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes).unwrap();
    assert_eq!((got, bytes.as_slice()), (put, &b"abc"[..]));
    // A negative size (a hostile peer) is refused by the body limit.
    let bad = Put {
        key: "k".into(),
        size: -1,
    };
    let mut frame = Vec::new();
    framing
        .write_frame(&mut frame, &to_python_json(&bad).unwrap())
        .unwrap();
    let err = framing
        .read_message::<_, Put>(&mut &frame[..])
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
