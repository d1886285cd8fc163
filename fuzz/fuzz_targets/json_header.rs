//! Parses arbitrary bytes as the tutorials' JSON headers: must never panic; whatever parses
//! must survive a round trip through the Python-style writer, which emits only ASCII.
#![no_main]

use libfuzzer_sys::fuzz_target;
use socketserver::framing::{
    FileHeader, TransferHeader, UploadHeader, from_json_header, to_python_json,
};

fn round_trip<T>(data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(h) = from_json_header::<T>(data) {
        let bytes = to_python_json(&h).unwrap();
        assert!(bytes.iter().all(|b| (b' '..=b'~').contains(b)));
        assert_eq!(from_json_header::<T>(&bytes).unwrap(), h);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<FileHeader>(data);
    round_trip::<TransferHeader>(data);
    round_trip::<UploadHeader>(data);
});
