//! Checks arbitrary strings as peer-supplied file names: every accepted name must be a
//! single, normal path component that stays inside the upload directory.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use socketserver::framing::{MAX_FILE_NAME_LEN, sanitize_file_name};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = sanitize_file_name(s) {
        assert_eq!(name, s);
        assert!(!name.is_empty() && name.len() <= MAX_FILE_NAME_LEN);
        assert!(!name.contains(['/', '\\', '\0']));
        let mut components = Path::new(name).components();
        assert!(matches!(components.next(), Some(Component::Normal(_))));
        assert!(components.next().is_none());
        assert_eq!(Path::new("/uploads").join(name).parent(), Some(Path::new("/uploads")));
    }
});
