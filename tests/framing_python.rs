//! Interoperability with the Python tutorials' code: `tests/python/framing_peer.py` uses
//! `struct.pack('i', ...)`, `json.dumps` and `hashlib.md5` exactly as the tutorials do,
//! against a small Rust peer on 127.0.0.1 (a std `TcpListener` and a thread; the crate's
//! server types are not used). Both directions: Python -> Rust and Rust -> Python.

use std::fs;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use socketserver::framing::{
    FileHeader, FileReceiver, Framing, TransferHeader, UPLOAD_CLOSE, UploadHeader,
    from_json_header, to_python_json,
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/framing_peer.py");
const TIMEOUT: Duration = Duration::from_secs(10);

/// Deterministic bytes, mirrored by `pattern` in framing_peer.py.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Accepts one connection from the Python peer (run in MODE) on a thread and hands it to
/// `serve`; fails the test if either side fails or takes longer than 30 s.
fn run_with_python<F>(mode: &str, serve: F)
where
    F: FnOnce(TcpStream) -> Result<(), String> + Send + 'static,
{
    // python3 is on every machine this project targets (and .ci/run checks it): a missing
    // interpreter is a failure, not a skip.
    assert!(
        python_available(),
        "python3 is required for the interop tests"
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || -> Result<(), String> {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("python peer never connected".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(TIMEOUT))
            .map_err(|e| e.to_string())?;
        serve(stream)
    });

    let mut child = Command::new("python3")
        .args([SCRIPT, mode, &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("python peer did not finish in 30 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let server_result = server.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ok") && server_result.is_ok(),
        "python peer: {} {stdout}{stderr}\nrust side: {server_result:?}",
        out.status
    );
}

fn check<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn read_frame(framing: Framing, r: &mut impl Read) -> Result<Vec<u8>, String> {
    framing
        .read_frame(r)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "unexpected end of stream".to_string())
}

/// The Rust side of `send`: reads everything the Python client sends and checks it.
fn receive_from_python(stream: TcpStream, dir: &Path) -> Result<(), String> {
    let framing = Framing::python();
    let mut rfile = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let rx = FileReceiver::new(dir).fsync(false);

    // 1. Frames, including three that arrive stuck together.
    let expected: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        Vec::new(),
        "你好, world".as_bytes().to_vec(),
        pattern(100_000, 1),
        b"one".to_vec(),
        b"two".to_vec(),
        b"three".to_vec(),
    ];
    let mut buf = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        framing
            .read_frame_into(&mut rfile, &mut buf)
            .map_err(|e| format!("frame {i}: {e}"))?;
        check(&format!("frame {i}"), &buf, want)?;
    }

    // 2. JSON-header upload: Python's header bytes are exactly what we would write.
    let raw = read_frame(framing, &mut rfile)?;
    let header: FileHeader = from_json_header(&raw).map_err(|e| e.to_string())?;
    check("file header", &header.file_name, &"上传.bin".to_string())?;
    check(
        "python json.dumps == to_python_json",
        String::from_utf8_lossy(&raw).into_owned(),
        String::from_utf8_lossy(&to_python_json(&header).map_err(|e| e.to_string())?).into_owned(),
    )?;
    let got = rx
        .receive(&header.file_name, &mut rfile, header.file_size, None)
        .map_err(|e| e.to_string())?;
    check(
        "uploaded file",
        fs::read(&got.path).map_err(|e| e.to_string())?,
        pattern(300_000, 2),
    )?;

    // 3. The upload protocol.
    let file_framing = framing.max_frame_len(i32::MAX as u64);
    let mut messages = Vec::new();
    loop {
        let frame = read_frame(framing, &mut rfile)?;
        if frame == UPLOAD_CLOSE {
            break;
        }
        match from_json_header::<UploadHeader>(&frame).map_err(|e| e.to_string())? {
            UploadHeader::Msg => {
                let text = read_frame(framing, &mut rfile)?;
                messages.push(String::from_utf8(text).map_err(|e| e.to_string())?);
            }
            UploadHeader::File { file_name } => {
                let len = file_framing
                    .read_header(&mut rfile)
                    .map_err(|e| e.to_string())?
                    .ok_or("no file frame")?;
                let got = rx
                    .receive(&file_name, &mut rfile, len, None)
                    .map_err(|e| e.to_string())?;
                check(
                    "protocol file",
                    fs::read(&got.path).map_err(|e| e.to_string())?,
                    pattern(70_000, 3),
                )?;
            }
        }
    }
    check("messages", messages, vec!["你好 from Python".to_string()])?;
    Ok(())
}

#[test]
fn python_client_sends_frames_json_messages_and_files_to_rust() {
    let dir = tempfile::Builder::new()
        .prefix("framing-python-rx-")
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    run_with_python("send", move |stream| {
        let result = receive_from_python(stream.try_clone().map_err(|e| e.to_string())?, &path);
        let verdict: &[u8] = if result.is_ok() { b"K" } else { b"F" };
        (&stream).write_all(verdict).map_err(|e| e.to_string())?;
        result
    });
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["proto.bin", "上传.bin"]);
}

/// The Rust side of `receive`: answers the Python client's command and sends it frames
/// and files.
fn send_to_python(stream: TcpStream, dir: &Path) -> Result<(), String> {
    let framing = Framing::python();
    let e = |e: std::io::Error| e.to_string();

    // 1. The command line arrives raw, in one send of at most 1024 bytes.
    let mut cmd = [0u8; 1024];
    let n = (&stream).read(&mut cmd).map_err(e)?;
    let cmd = String::from_utf8(cmd[..n].to_vec()).map_err(|e| e.to_string())?;
    check("command", cmd.as_str(), "ls -l")?;
    let output = pattern(200_000, 4);
    let mut wfile = BufWriter::new(stream.try_clone().map_err(e)?);
    framing
        .write_message(
            &mut wfile,
            &TransferHeader::for_bytes(cmd, &output),
            &output[..],
        )
        .map_err(e)?;

    // 2. Frames.
    for f in [&b"hello"[..], b"", "你好".as_bytes(), &pattern(50_000, 5)] {
        framing.write_frame(&mut wfile, f).map_err(e)?;
    }
    wfile.flush().map_err(e)?;

    // 3 and 4. A file as a JSON-header message, then as one frame, straight to the socket.
    let src = dir.join("src.bin");
    fs::write(&src, pattern(123_457, 6)).map_err(e)?;
    let mut w = &stream;
    framing
        .send_file_message(&mut w, &src, "数据.bin")
        .map_err(e)?;
    framing.send_file(&mut w, &src).map_err(e)?;

    // 5. Close our side; wait for Python to finish and close.
    stream.shutdown(Shutdown::Write).map_err(e)?;
    let mut rest = Vec::new();
    (&stream).read_to_end(&mut rest).map_err(e)?;
    check("bytes after the exchange", rest.len(), 0)
}

#[test]
fn rust_sends_command_reply_frames_and_files_to_python_client() {
    let dir = tempfile::Builder::new()
        .prefix("framing-python-tx-")
        .tempdir()
        .unwrap();
    let path = dir.path().to_path_buf();
    run_with_python("receive", move |stream| send_to_python(stream, &path));
}
