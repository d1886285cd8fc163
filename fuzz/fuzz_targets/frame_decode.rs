//! Decodes arbitrary bytes as a stream of frames: must never panic, never allocate past
//! the limit, and every frame it accepts must re-encode to exactly the bytes it consumed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::framing::{Framing, LengthPrefix};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let prefix = LengthPrefix::ALL[usize::from(selector) % LengthPrefix::ALL.len()];
    let framing = Framing::with_prefix(prefix).max_frame_len(64 * 1024);
    let mut r = stream;
    let mut buf = Vec::new();
    let mut reencoded = Vec::new();
    loop {
        let before = r.len();
        match framing.read_frame_into(&mut r, &mut buf) {
            Ok(Some(n)) => {
                assert_eq!(n, buf.len());
                assert!(n as u64 <= framing.get_max_frame_len());
                framing.write_frame(&mut reencoded, &buf).unwrap();
                assert_eq!(before - r.len(), prefix.header_len() + n);
            }
            Ok(None) => {
                assert!(r.is_empty());
                break;
            }
            Err(_) => break,
        }
    }
    assert_eq!(&reencoded[..], &stream[..reencoded.len()]);
});
