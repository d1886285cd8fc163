//! Property tests for the framing toolkit: the sticky-packet regression test (frames written
//! back to back decode to the same sequence however the byte stream is cut), for every
//! header format, plus partial writes and JSON round trips.

use std::io::{self, BufReader, IoSlice, Read, Write};

use proptest::prelude::*;
use socketserver::framing::{
    FileHeader, FrameReader, Framing, LengthPrefix, from_json_header, to_python_json,
};

/// How the reader hands out the stream.
#[derive(Debug, Clone)]
enum Chunking {
    /// One byte per `read`.
    OneByte,
    /// `read`s of these sizes, cycled.
    Random(Vec<usize>),
    /// Everything in as few `read`s as the caller's buffer allows ("all coalesced").
    Coalesced,
}

/// A reader that delivers `data` cut according to a [`Chunking`].
struct Chunked {
    data: Vec<u8>,
    pos: usize,
    chunking: Chunking,
    step: usize,
}

impl Chunked {
    fn new(data: Vec<u8>, chunking: Chunking) -> Self {
        Chunked {
            data,
            pos: 0,
            chunking,
            step: 0,
        }
    }
}

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len() - self.pos;
        let want = match &self.chunking {
            Chunking::OneByte => 1,
            Chunking::Random(sizes) => sizes[self.step % sizes.len()],
            Chunking::Coalesced => left,
        };
        self.step += 1;
        let n = want.min(left).min(buf.len());
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer that accepts at most a chosen number of bytes per call, also through
/// `write_vectored`, to exercise the partial-write loops.
struct Partial {
    out: Vec<u8>,
    sizes: Vec<usize>,
    step: usize,
}

impl Partial {
    fn next_size(&mut self) -> usize {
        let s = self.sizes[self.step % self.sizes.len()];
        self.step += 1;
        s
    }
}

impl Write for Partial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.next_size().min(buf.len());
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut budget = self.next_size();
        let mut n = 0;
        for b in bufs {
            let k = budget.min(b.len());
            self.out.extend_from_slice(&b[..k]);
            n += k;
            budget -= k;
            if budget == 0 {
                break;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        Just(Chunking::OneByte),
        prop::collection::vec(1usize..64, 1..8).prop_map(Chunking::Random),
        prop::collection::vec(1usize..20_000, 1..4).prop_map(Chunking::Random),
        Just(Chunking::Coalesced),
    ]
}

/// Mostly small frames, some empty, a few around or over the coalescing thresholds.
fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let frame = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..300),
        1 => Just(Vec::new()),
        // Lengths at the edges of the stack-buffer tiers in `write_frame`.
        1 => prop::sample::select(vec![248usize, 249, 2040, 2041, 4096, 4097, 8192, 8193])
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n)),
        1 => prop::collection::vec(any::<u8>(), 8_100..20_000),
    ];
    prop::collection::vec(frame, 0..12)
}

fn encode_all(framing: Framing, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for f in frames {
        framing.write_frame(&mut wire, f).unwrap();
    }
    wire
}

fn decode_all<R: Read>(framing: Framing, r: R) -> Vec<Vec<u8>> {
    let mut reader = FrameReader::new(framing, r);
    let mut out = Vec::new();
    while let Some(f) = reader.next_frame().unwrap() {
        out.push(f.to_vec());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The sticky-packet regression test, for every header format.
    #[test]
    fn frames_survive_any_chunking(frames in frames(), chunking in chunking(), buffered in any::<bool>()) {
        for prefix in LengthPrefix::ALL {
            let framing = Framing::with_prefix(prefix);
            let wire = encode_all(framing, &frames);
            let expected_len: usize =
                frames.iter().map(|f| f.len() + prefix.header_len()).sum();
            prop_assert_eq!(wire.len(), expected_len);
            let reader = Chunked::new(wire, chunking.clone());
            let decoded = if buffered {
                // A handler's rfile is a BufReader over the socket.
                decode_all(framing, BufReader::with_capacity(37, reader))
            } else {
                decode_all(framing, reader)
            };
            prop_assert_eq!(&decoded, &frames, "prefix {:?}", prefix);
        }
    }

    /// Writing through a writer that takes a few bytes per call produces the same bytes.
    #[test]
    fn partial_writes_produce_the_same_stream(
        frames in frames(),
        sizes in prop::collection::vec(1usize..5000, 1..6),
    ) {
        for prefix in LengthPrefix::ALL {
            let framing = Framing::with_prefix(prefix);
            let mut w = Partial { out: Vec::new(), sizes: sizes.clone(), step: 0 };
            for f in &frames {
                framing.write_frame(&mut w, f).unwrap();
            }
            prop_assert_eq!(&w.out, &encode_all(framing, &frames));
        }
    }

    /// JSON-header messages (header frame + raw body) survive any chunking too.
    #[test]
    fn json_messages_survive_any_chunking(
        msgs in prop::collection::vec((".{0,20}", prop::collection::vec(any::<u8>(), 0..200)), 0..6),
        chunking in chunking(),
    ) {
        let framing = Framing::python();
        let mut wire = Vec::new();
        for (name, body) in &msgs {
            let h = FileHeader { file_name: name.clone(), file_size: body.len() as u64 };
            framing.write_message(&mut wire, &h, &body[..]).unwrap();
        }
        let mut r = Chunked::new(wire, chunking);
        let mut got = Vec::new();
        while let Some((h, mut body)) = framing.read_message::<_, FileHeader>(&mut r).unwrap() {
            let mut bytes = Vec::new();
            body.read_to_end(&mut bytes).unwrap();
            got.push((h.file_name, bytes));
        }
        prop_assert_eq!(got, msgs);
    }

    /// Python-style JSON is pure printable ASCII and parses back to the same value.
    #[test]
    fn python_json_round_trips(s in any::<String>(), n in any::<u64>()) {
        let h = FileHeader { file_name: s, file_size: n };
        let bytes = to_python_json(&h).unwrap();
        prop_assert!(bytes.iter().all(|b| (b' '..=b'~').contains(b)));
        prop_assert_eq!(from_json_header::<FileHeader>(&bytes).unwrap(), h);
    }
}

/// A writer that records each call, to prove a small frame leaves in one `write`.
#[derive(Default)]
struct CallLog {
    calls: Vec<usize>,
}

impl Write for CallLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.calls.push(buf.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn small_frame_is_written_in_one_call_even_without_vectored_io() {
    // CallLog keeps the default write_vectored, which writes only the first buffer: a
    // naive header-then-payload write would show up here as two calls.
    for prefix in LengthPrefix::ALL {
        let mut w = CallLog::default();
        Framing::with_prefix(prefix)
            .write_frame(&mut w, b"hello")
            .unwrap();
        assert_eq!(w.calls, vec![prefix.header_len() + 5], "{prefix:?}");
    }
}

#[test]
fn large_frame_uses_one_vectored_call_on_a_vectored_writer() {
    // Vec<u8> implements write_vectored, taking everything at once.
    struct Counting(Vec<u8>, usize);
    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.1 += 1;
            self.0.write(buf)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.1 += 1;
            self.0.write_vectored(bufs)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let payload = vec![7u8; 100_000];
    let mut w = Counting(Vec::new(), 0);
    Framing::new().write_frame(&mut w, &payload).unwrap();
    assert_eq!(w.1, 1);
    assert_eq!(&w.0[..4], &100_000u32.to_be_bytes());
    assert_eq!(&w.0[4..], &payload[..]);
}

#[test]
fn framing_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Framing>();
    assert_send_sync::<FrameReader<std::net::TcpStream>>();
    assert_send_sync::<socketserver::framing::FileReceiver>();
    assert_send_sync::<socketserver::framing::BodyReader<std::net::TcpStream>>();
    assert_send_sync::<socketserver::framing::ReceiveError>();
}
