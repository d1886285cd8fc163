//! Every kind of bad input to the framing toolkit gets a clear error, allocates nothing
//! for a hostile length, and leaves no file behind.

use std::fs;
use std::io::{self, ErrorKind, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use socketserver::framing::{
    BodyReader, FileHeader, FileReceiver, FrameReader, Framing, LengthPrefix, NameError,
    ReceiveError, TransferHeader, md5_hex, sanitize_file_name,
};

/// A reader that records how many bytes were asked of it, to prove nothing past a bad
/// header is read.
struct Counting<'a> {
    data: &'a [u8],
    read: usize,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.read += n;
        Ok(n)
    }
}

/// A reader that yields `data`, then fails with the given error kind.
struct FailAfter<'a> {
    data: &'a [u8],
    kind: ErrorKind,
}

impl Read for FailAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            return Err(io::Error::new(self.kind, "injected failure"));
        }
        let n = self.data.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[track_caller]
fn assert_dir_empty(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        dir.display()
    );
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("framing-errors-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------- frames

#[test]
fn negative_length_is_invalid_data_naming_the_length() {
    let wire = [(-5i32).to_le_bytes().as_slice(), b"hello"].concat();
    let mut r = Counting {
        data: &wire,
        read: 0,
    };
    let mut buf = Vec::new();
    let err = Framing::python()
        .read_frame_into(&mut r, &mut buf)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(msg.contains("-5") && msg.contains("16777216"), "{msg}");
    assert_eq!(r.read, 4, "read past the header");
    assert_eq!(buf.capacity(), 0, "allocated for a negative frame");
}

#[test]
fn over_limit_length_is_refused_before_any_allocation() {
    // The limit is 16 MiB; the header announces 2 GiB (or more).
    let cases: [(LengthPrefix, Vec<u8>, &str); 3] = [
        (
            LengthPrefix::U32Be,
            (2u32 << 30).to_be_bytes().to_vec(),
            "2147483648",
        ),
        (
            LengthPrefix::I32Le,
            i32::MAX.to_le_bytes().to_vec(),
            "2147483647",
        ),
        (
            LengthPrefix::U64Be,
            u64::MAX.to_be_bytes().to_vec(),
            "18446744073709551615",
        ),
    ];
    for (prefix, header, shown) in cases {
        let wire = [header.as_slice(), &[0u8; 64]].concat();
        let mut r = Counting {
            data: &wire,
            read: 0,
        };
        let mut buf = Vec::new();
        let err = Framing::with_prefix(prefix)
            .read_frame_into(&mut r, &mut buf)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{prefix:?}");
        let msg = err.to_string();
        assert!(msg.contains(shown) && msg.contains("16777216"), "{msg}");
        assert_eq!(
            r.read,
            prefix.header_len(),
            "{prefix:?}: read past the header"
        );
        assert_eq!(buf.capacity(), 0, "{prefix:?}: allocated");
    }
}

#[test]
fn configured_limit_applies_to_reads_and_writes() {
    let small = Framing::new().max_frame_len(10);
    let mut wire = Vec::new();
    let err = small.write_frame(&mut wire, &[0; 11]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(wire.is_empty(), "wrote part of a refused frame");
    assert!(err.to_string().contains("11"), "{err}");

    Framing::new().write_frame(&mut wire, &[0; 11]).unwrap();
    let err = small.read_frame(&mut &wire[..]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidData);
    assert!(err.to_string().contains("11") && err.to_string().contains("10"));

    // Exactly at the limit is fine; the U16 header caps the limit at 65 535.
    assert_eq!(
        small
            .read_frame(&mut &[0, 0, 0, 10][..])
            .unwrap_err()
            .kind(),
        ErrorKind::UnexpectedEof
    );
    assert_eq!(
        Framing::with_prefix(LengthPrefix::U16Be).get_max_frame_len(),
        65_535
    );
    let err = Framing::with_prefix(LengthPrefix::U16Be)
        .write_frame(&mut Vec::new(), &vec![0; 65_536])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn eof_mid_header_is_unexpected_eof_for_every_prefix() {
    for prefix in LengthPrefix::ALL {
        let framing = Framing::with_prefix(prefix);
        let mut full = Vec::new();
        framing.write_frame(&mut full, b"x").unwrap();
        for cut in 1..prefix.header_len() {
            let err = framing.read_frame(&mut &full[..cut]).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::UnexpectedEof,
                "{prefix:?} cut at {cut}"
            );
            assert!(err.to_string().contains("header"), "{err}");
        }
    }
}

#[test]
fn eof_mid_payload_is_unexpected_eof() {
    for prefix in LengthPrefix::ALL {
        let framing = Framing::with_prefix(prefix);
        let mut full = Vec::new();
        framing.write_frame(&mut full, b"hello").unwrap();
        for cut in prefix.header_len()..full.len() {
            let err = framing.read_frame(&mut &full[..cut]).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::UnexpectedEof,
                "{prefix:?} cut at {cut}"
            );
            assert!(err.to_string().contains("payload"), "{err}");
        }
    }
}

#[test]
fn clean_eof_between_frames_is_none_and_empty_frames_are_valid() {
    let framing = Framing::python();
    let mut wire = Vec::new();
    framing.write_frame(&mut wire, b"").unwrap();
    framing.write_frame(&mut wire, b"a").unwrap();
    let mut frames = FrameReader::new(framing, &wire[..]);
    assert_eq!(frames.next_frame().unwrap(), Some(&b""[..]));
    assert_eq!(frames.next_frame().unwrap(), Some(&b"a"[..]));
    assert_eq!(frames.next_frame().unwrap(), None);
    assert_eq!(frames.next_frame().unwrap(), None);
}

#[test]
fn read_errors_are_passed_through() {
    let mut r = FailAfter {
        data: &[5, 0],
        kind: ErrorKind::ConnectionReset,
    };
    let err = Framing::python().read_frame(&mut r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
}

// ---------------------------------------------------------------- JSON headers

#[test]
fn garbage_json_header_is_invalid_data_quoting_it() {
    let framing = Framing::python();
    for garbage in [
        &b"{not json"[..],
        b"\xff\xfe",
        b"",
        b"[1, 2]",
        b"{\"file_name\": 3}",
    ] {
        let mut wire = Vec::new();
        framing.write_frame(&mut wire, garbage).unwrap();
        let err = framing
            .read_message::<_, FileHeader>(&mut &wire[..])
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData, "{garbage:?}");
        assert!(err.to_string().contains("invalid JSON header"), "{err}");
    }
}

#[test]
fn header_declaring_more_than_the_body_is_unexpected_eof() {
    let framing = Framing::python();
    let mut wire = Vec::new();
    framing
        .write_json(
            &mut wire,
            &FileHeader {
                file_name: "b".into(),
                file_size: 10,
            },
        )
        .unwrap();
    wire.extend_from_slice(b"short");
    let mut r = &wire[..];
    let (_, mut body) = framing
        .read_message::<_, FileHeader>(&mut r)
        .unwrap()
        .unwrap();
    let err = body.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    assert!(err.to_string().contains("5 of 10"), "{err}");

    // The same through FileReceiver: an error, and no file.
    let dir = tempdir();
    let rx = FileReceiver::new(dir.path());
    match rx.receive_message(&framing, &mut &wire[..]) {
        Err(ReceiveError::Io(e)) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    assert_dir_empty(dir.path());
}

#[test]
fn header_declaring_less_than_the_body_reads_no_further() {
    let framing = Framing::python();
    let mut wire = Vec::new();
    framing
        .write_json(
            &mut wire,
            &FileHeader {
                file_name: "b".into(),
                file_size: 3,
            },
        )
        .unwrap();
    wire.extend_from_slice(b"abcdefgh");
    let mut r = &wire[..];
    let (_, mut body) = framing
        .read_message::<_, FileHeader>(&mut r)
        .unwrap()
        .unwrap();
    let mut got = Vec::new();
    body.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc");
    assert_eq!(r, b"defgh", "the body reader read past its declared length");
    // What follows is then taken as the next frame: garbage, refused.
    assert_eq!(
        framing.read_frame(&mut r).unwrap_err().kind(),
        ErrorKind::InvalidData
    );
}

#[test]
fn writing_a_body_shorter_than_its_header_is_an_error() {
    let h = TransferHeader {
        filename: "x".into(),
        total_size: 10,
        md5: md5_hex(b""),
    };
    let err = Framing::python()
        .write_message(&mut Vec::new(), &h, &b"abc"[..])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
}

#[test]
fn body_reader_reports_bytes_received() {
    let mut body = BodyReader::new(&b"ab"[..], 4);
    let mut buf = [0u8; 8];
    assert_eq!(body.read(&mut buf).unwrap(), 2);
    assert_eq!(body.remaining(), 2);
    let err = body.read(&mut buf).unwrap_err();
    assert!(err.to_string().contains("2 of 4"), "{err}");
}

// ---------------------------------------------------------------- file names

#[test]
fn hostile_file_names_are_refused_and_create_nothing() {
    let long = "a".repeat(256);
    let table: &[(&str, NameError)] = &[
        ("", NameError::Empty),
        (".", NameError::DotName),
        ("..", NameError::DotName),
        ("../escape", NameError::Separator('/')),
        ("a/../../escape", NameError::Separator('/')),
        ("..\\escape", NameError::Separator('\\')),
        ("sub/file", NameError::Separator('/')),
        ("/etc/passwd", NameError::Absolute),
        ("\\\\server\\share", NameError::Absolute),
        ("C:\\Windows", NameError::Absolute),
        ("c:evil", NameError::Absolute),
        ("nul\0byte", NameError::Nul),
        ("new\nline", NameError::ForbiddenChar('\n')),
        ("bell\x07", NameError::ForbiddenChar('\x07')),
        ("what?", NameError::ForbiddenChar('?')),
        ("file:stream", NameError::ForbiddenChar(':')),
        ("pipe|", NameError::ForbiddenChar('|')),
        ("trailing.", NameError::TrailingDotOrSpace),
        ("trailing ", NameError::TrailingDotOrSpace),
        ("CON", NameError::Reserved("CON".into())),
        ("nul.txt", NameError::Reserved("nul.txt".into())),
        ("com1.tar.gz", NameError::Reserved("com1.tar.gz".into())),
        ("LPT9", NameError::Reserved("LPT9".into())),
        ("Aux.c", NameError::Reserved("Aux.c".into())),
        (&long, NameError::TooLong(256)),
    ];
    let outer = tempdir();
    let dir = outer.path().join("uploads");
    fs::create_dir(&dir).unwrap();
    let rx = FileReceiver::new(&dir);
    for (name, expected) in table {
        assert_eq!(sanitize_file_name(name).as_ref(), Err(expected), "{name:?}");
        match rx.receive(name, &b"pwned"[..], 5, None) {
            Err(ReceiveError::InvalidName(e)) => assert_eq!(&e, expected, "{name:?}"),
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
        assert!(!expected.to_string().is_empty());
    }
    assert_dir_empty(&dir);
    let outer_entries: Vec<_> = fs::read_dir(outer.path()).unwrap().collect();
    assert_eq!(
        outer_entries.len(),
        1,
        "something escaped the upload directory"
    );
}

#[test]
fn ordinary_names_are_accepted() {
    for name in [
        "a",
        "report.pdf",
        ".hidden",
        "你好.txt",
        "COM10",
        "console.log",
        "a b",
    ] {
        assert_eq!(sanitize_file_name(name), Ok(name));
    }
    assert!(sanitize_file_name(&"a".repeat(255)).is_ok());
}

// ---------------------------------------------------------------- receiving files

#[test]
fn checksum_mismatch_stores_nothing() {
    let dir = tempdir();
    let rx = FileReceiver::new(dir.path());
    let wrong = md5_hex(b"something else");
    match rx.receive("f.bin", &b"payload"[..], 7, Some(&wrong)) {
        Err(ReceiveError::ChecksumMismatch { expected, actual }) => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, md5_hex(b"payload"));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    assert_dir_empty(dir.path());
    // Upper-case hex is accepted, as Python peers may send it.
    let upper = md5_hex(b"payload").to_uppercase();
    let got = rx
        .receive("f.bin", &b"payload"[..], 7, Some(&upper))
        .unwrap();
    assert_eq!(fs::read(got.path).unwrap(), b"payload");
}

#[test]
fn malformed_checksum_and_oversize_are_refused_before_reading() {
    let dir = tempdir();
    let rx = FileReceiver::new(dir.path()).max_size(100);
    let mut r = Counting {
        data: &[0; 200],
        read: 0,
    };
    match rx.receive("f", &mut r, 101, None) {
        Err(ReceiveError::TooLarge {
            size: 101,
            limit: 100,
        }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    match rx.receive("f", &mut r, 10, Some("not-a-checksum")) {
        Err(ReceiveError::MalformedChecksum(_)) => {}
        other => panic!("expected MalformedChecksum, got {other:?}"),
    }
    assert_eq!(r.read, 0);
    assert_dir_empty(dir.path());
    let e: io::Error = ReceiveError::TooLarge {
        size: 101,
        limit: 100,
    }
    .into();
    assert_eq!(e.kind(), ErrorKind::InvalidData);
    assert!(
        e.to_string().contains("101") && e.to_string().contains("100"),
        "{e}"
    );
}

#[test]
fn stream_errors_and_early_eof_leave_nothing_behind() {
    let dir = tempdir();
    let rx = FileReceiver::new(dir.path());
    let data = vec![1u8; 200_000];
    let mut failing = FailAfter {
        data: &data,
        kind: ErrorKind::ConnectionReset,
    };
    match rx.receive("a", &mut failing, 300_000, None) {
        Err(ReceiveError::Io(e)) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        other => panic!("expected ConnectionReset, got {other:?}"),
    }
    match rx.receive("a", &data[..], 300_000, None) {
        Err(ReceiveError::Io(e)) => assert_eq!(e.kind(), ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    assert_dir_empty(dir.path());
}

#[test]
fn existing_files_and_symlinks_are_never_replaced_by_default() {
    let dir = tempdir();
    let rx = FileReceiver::new(dir.path()).fsync(false);
    fs::write(dir.path().join("taken"), b"original").unwrap();
    match rx.receive("taken", &b"new"[..], 3, None) {
        Err(ReceiveError::AlreadyExists(p)) => assert_eq!(p, dir.path().join("taken")),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(fs::read(dir.path().join("taken")).unwrap(), b"original");

    #[cfg(unix)]
    {
        let outside = tempdir();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("nothing"), dir.path().join("dangling"))
            .unwrap();
        for name in ["link", "dangling"] {
            assert!(matches!(
                rx.receive(name, &b"evil"[..], 4, None),
                Err(ReceiveError::AlreadyExists(_))
            ));
        }
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!outside.path().join("nothing").exists());

        // With overwrite, the symlink itself is replaced; its target is untouched.
        let rx = rx.overwrite(true);
        let got = rx.receive("link", &b"evil"[..], 4, None).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&got.path).unwrap().is_file());
        assert_eq!(fs::read(&got.path).unwrap(), b"evil");
    }
    let mut left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert!(
        left.iter().all(|n| !n.ends_with(".part")),
        "temporary file left: {left:?}"
    );
}

// ---------------------------------------------------------------- a full disk

const FSIZE_CHILD_ENV: &str = "FRAMING_TEST_FSIZE_CHILD_DIR";
const FSIZE_CHILD_OK: &str = "FSIZE-CHILD-OK";

/// Runs in a child process only (see `full_disk_leaves_nothing_behind`): limits the file
/// size with RLIMIT_FSIZE, ignores SIGXFSZ, and receives a file larger than the limit.
#[test]
fn fsize_child() {
    let Some(dir) = std::env::var_os(FSIZE_CHILD_ENV) else {
        return; // Not the child: nothing to do.
    };
    #[cfg(unix)]
    {
        let limit = libc::rlimit {
            rlim_cur: 64 * 1024,
            rlim_max: 64 * 1024,
        };
        // SAFETY: plain syscalls on this (child) process with valid arguments.
        unsafe {
            assert_eq!(libc::signal(libc::SIGXFSZ, libc::SIG_IGN), libc::SIG_DFL);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let body = vec![9u8; 1024 * 1024];
        let rx = FileReceiver::new(&dir);
        match rx.receive("big.bin", &body[..], body.len() as u64, None) {
            Err(ReceiveError::Io(e)) if e.raw_os_error() == Some(libc::EFBIG) => {
                println!("{FSIZE_CHILD_OK}: {e}");
            }
            other => panic!("expected EFBIG, got {other:?}"),
        }
    }
}

#[cfg(unix)]
#[test]
fn full_disk_leaves_nothing_behind() {
    let dir = tempdir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["fsize_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(FSIZE_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("child did not finish in 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(FSIZE_CHILD_OK),
        "child failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_dir_empty(dir.path());
}

// ---------------------------------------------------------------- sending files

#[test]
fn send_file_refuses_directories_and_files_over_the_limit() {
    let dir = tempdir();
    let mut wire = Vec::new();
    let err = Framing::new().send_file(&mut wire, dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let big = dir.path().join("big");
    fs::write(&big, vec![0u8; 11]).unwrap();
    let err = Framing::new()
        .max_frame_len(10)
        .send_file(&mut wire, &big)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(wire.is_empty(), "wrote part of a refused file");
    let err = Framing::new()
        .send_file(&mut wire, &dir.path().join("missing"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn empty_and_multi_chunk_files_round_trip() {
    let src_dir = tempdir();
    let dst_dir = tempdir();
    let framing = Framing::python();
    let rx = FileReceiver::new(dst_dir.path()).fsync(false);
    for (name, len) in [("empty", 0usize), ("odd", 200_003)] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let src = src_dir.path().join(name);
        fs::write(&src, &data).unwrap();

        let mut wire = Vec::new();
        assert_eq!(framing.send_file(&mut wire, &src).unwrap(), len as u64);
        assert_eq!(wire.len(), 4 + len);
        let mut r = &wire[..];
        let n = framing.read_header(&mut r).unwrap().unwrap();
        let got = rx
            .receive(&format!("{name}.1"), &mut r, n, Some(&md5_hex(&data)))
            .unwrap();
        assert_eq!(fs::read(&got.path).unwrap(), data);

        let mut wire = Vec::new();
        framing.send_file_message(&mut wire, &src, name).unwrap();
        let got = rx
            .receive_message(&framing, &mut &wire[..])
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.bytes, fs::read(&got.path).unwrap()),
            (len as u64, data)
        );
    }
}
