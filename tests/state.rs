//! Shared state beside `rfile` and `wfile` (issue 13.7): an owned `Arc` that borrows
//! nothing, and a wrong type named, not a silent `None`.

mod util;

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::Mutex;

use socketserver::*;
use util::*;

#[derive(Debug, Default)]
struct KvStore(Mutex<HashMap<String, String>>);

/// The code: state taken first, then `rfile` and `wfile` used beside it.
fn kv(req: &mut StreamRequest) -> io::Result<()> {
    let store = req.server().state_arc::<KvStore>()?;
    let mut line = String::new();
    while req.rfile.read_line(&mut line)? > 0 {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                store.0.lock().unwrap().insert(k.into(), v.into());
                writeln!(req.wfile, "OK")?;
            }
            (Some("GET"), Some(k), None) => match store.0.lock().unwrap().get(k) {
                Some(v) => writeln!(req.wfile, "{v}")?,
                None => writeln!(req.wfile, "NOT FOUND")?,
            },
            _ => writeln!(req.wfile, "ERROR")?,
        }
        line.clear();
    }
    Ok(())
}

#[test]
fn state_arc_is_usable_beside_rfile_and_wfile_and_shared_by_connections() {
    let server = ThreadingTcpServer::builder()
        .state(KvStore::default())
        .bind("127.0.0.1:0", kv)
        .unwrap();
    let addr = server.server_address().unwrap();
    let _run = Running::start(server);
    assert_eq!(round_trip(addr, b"SET a 1\nGET a\n"), b"OK\n1\n");
    // Another connection sees what the first one stored.
    assert_eq!(round_trip(addr, b"GET a\nGET b\n"), b"1\nNOT FOUND\n");
}

#[test]
fn asking_for_another_state_type_is_an_error_naming_both_types() {
    let server = ThreadingTcpServer::builder()
        .state(42u32)
        .handle_error(|_, _| {})
        .bind("127.0.0.1:0", kv)
        .unwrap();
    let handle = server.handle();
    let err = handle.state_arc::<KvStore>().unwrap_err();
    assert_eq!(err.wanted(), std::any::type_name::<KvStore>());
    assert_eq!(err.stored(), Some("u32"));
    assert_eq!(
        err.to_string(),
        format!(
            "the server's state is `u32`, not `{}` (Builder::state)",
            std::any::type_name::<KvStore>()
        )
    );
    assert_eq!(*handle.state_arc::<u32>().unwrap(), 42);
    let io: io::Error = err.into();
    assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
    // In a handler, `?` ends the request with that error.
    let addr = server.server_address().unwrap();
    let run = Running::start(server);
    let mut c = connect(addr);
    c.write_all(b"GET a\n").unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    assert!(out.is_empty());
    wait_until("the error is counted", || run.server.stats().errors == 1);
}

#[test]
fn no_state_is_an_error_that_says_so() {
    let server = ThreadingTcpServer::bind("127.0.0.1:0", kv).unwrap();
    let err = server.handle().state_arc::<KvStore>().unwrap_err();
    assert_eq!(err.stored(), None);
    assert!(err.to_string().contains("has no state"), "{err}");
}
