//! The `chat` example, end to end as real processes: members see each other's messages and
//! join/leave notices, `/who`, nickname checks, a member that stops reading is disconnected
//! while the room keeps going, bad input is refused without harm, the UDP relay forwards to
//! the other peers only, Ctrl-C exits 0, and the client notices a server that goes away.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use util::*;

/// A raw TCP member: what it receives arrives line by line on a channel.
struct Member {
    conn: TcpStream,
    lines: Receiver<String>,
}

impl Member {
    /// Connects and reads the welcome line, without choosing a nickname.
    #[track_caller]
    fn connect(addr: SocketAddr) -> Member {
        let conn = connect(addr);
        conn.set_read_timeout(None).unwrap(); // the reader thread waits as long as needed
        let (tx, lines) = crossbeam_channel::unbounded();
        let reader = BufReader::new(conn.try_clone().unwrap());
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let m = Member { conn, lines };
        m.expect("* welcome");
        m
    }

    /// Connects and takes `nick`.
    #[track_caller]
    fn join(addr: SocketAddr, nick: &str) -> Member {
        let mut m = Member::connect(addr);
        m.say(nick);
        m.expect(&format!("* you are {nick}"));
        m
    }

    #[track_caller]
    fn say(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes());
    }

    #[track_caller]
    fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).unwrap();
    }

    /// Skips lines until one contains `needle`.
    #[track_caller]
    fn expect(&self, needle: &str) -> String {
        ChildProc::expect_line(&self.lines, needle)
    }

    /// The very next line.
    #[track_caller]
    fn next(&self) -> String {
        self.lines
            .recv_timeout(LONG)
            .expect("no line from the server")
    }

    /// Waits until the server closes the connection.
    #[track_caller]
    fn expect_closed(&self) {
        loop {
            match self.lines.recv_timeout(LONG) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => panic!("the server did not close the connection"),
            }
        }
    }
}

#[test]
fn members_see_each_others_messages_and_notices() {
    let (mut server, addr) = spawn_example_server("chat", &[]);
    let mut alice = Member::join(addr, "alice");
    let mut bob = Member::join(addr, "bob");
    assert_eq!(alice.next(), "* bob joined");

    alice.say("hello bob, 你好");
    assert_eq!(bob.next(), "<alice> hello bob, 你好");
    bob.say("hi alice\r"); // \r\n line ends are accepted
    assert_eq!(alice.next(), "<bob> hi alice");
    bob.say("//slash"); // `//` escapes a leading slash
    assert_eq!(alice.next(), "<bob> /slash");
    bob.say(""); // ignored
    // A sender never gets its own message back: the next line is the answer to /who.
    alice.say("/who");
    assert_eq!(alice.next(), "* online (2): alice, bob");

    bob.say("/nick bobby");
    assert_eq!(bob.next(), "* you are bobby");
    assert_eq!(alice.next(), "* bob is now bobby");
    bob.say("/quit");
    assert_eq!(bob.next(), "* bye");
    bob.expect_closed();
    assert_eq!(alice.next(), "* bobby left");
    alice.say("/who");
    assert_eq!(alice.next(), "* online (1): alice");
    drop(alice);

    ChildProc::expect_line(&server.stderr, "bobby quit");
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn our_client_shows_messages_while_it_sends() {
    let (mut server, addr) = spawn_example_server("chat", &[]);
    let mut alice = Member::join(addr, "alice");

    let mut cmd = std::process::Command::new(example_path("chat"));
    cmd.args(["client", "--addr", &addr.to_string(), "--nick", "carol"]);
    let mut client = ChildProc::spawn_with_stdin(cmd);
    ChildProc::expect_line(&client.stdout, "* you are carol");
    assert_eq!(alice.next(), "* carol joined");

    let mut stdin = client.child.stdin.take().unwrap();
    stdin.write_all(b"hi alice\n").unwrap();
    assert_eq!(alice.next(), "<carol> hi alice");
    alice.say("hi carol");
    ChildProc::expect_line(&client.stdout, "<alice> hi carol");

    // End of stdin: the client sends /quit and exits 0 once the server has closed.
    drop(stdin);
    assert_eq!(alice.next(), "* carol left");
    assert_eq!(client.wait_exit(), Some(0));
    ChildProc::expect_line(&client.stdout, "* bye");

    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn bad_and_duplicate_nicknames_are_refused() {
    let (_server, addr) = spawn_example_server("chat", &[]);
    let _bob = Member::join(addr, "bob");
    let mut m = Member::connect(addr);
    let long = "x".repeat(33);
    for (nick, error) in [
        ("bob", "! nickname bob is taken"),
        ("BOB", "! nickname BOB is taken"),
        ("/nick", "! usage: /nick NAME"),
        ("/nick two words", "! nickname must not contain whitespace"),
        (
            "bell\x07",
            "! nickname must not contain whitespace or control",
        ),
        ("/nick /slash", "! nickname must not start with /"),
        (long.as_str(), "! nickname too long (at most 32 characters)"),
        ("/frobnicate", "! unknown command /frobnicate"),
    ] {
        m.say(nick);
        let line = m.next();
        assert!(line.starts_with(error), "{nick:?}: {line:?}");
    }
    // Not in the room yet: /who shows only bob. 32 characters (not bytes) are fine.
    m.say("/who");
    assert_eq!(m.next(), "* online (1): bob");
    let name = "é".repeat(32);
    m.say(&name);
    assert_eq!(m.next(), format!("* you are {name}"));
}

#[test]
fn bad_input_gets_an_error_and_the_room_goes_on() {
    let (mut server, addr) = spawn_example_server("chat", &[]);
    let mut alice = Member::join(addr, "alice");
    let bob = Member::join(addr, "bob");
    alice.expect("* bob joined");

    alice.send(b"caf\xe9 latin-1\n");
    assert_eq!(alice.next(), "! invalid UTF-8: line dropped");
    let mut long = vec![b'y'; 5000];
    long.push(b'\n');
    alice.send(&long);
    assert_eq!(
        alice.next(),
        "! line too long (at most 4096 bytes): dropped"
    );
    // A line of exactly 4096 bytes is fine.
    let max = "z".repeat(4096);
    alice.say(&max);
    alice.say("still here");
    assert_eq!(bob.next(), format!("<alice> {max}"));
    assert_eq!(bob.next(), "<alice> still here");

    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(), Some(0));
    assert!(
        !server.stderr.try_iter().any(|l| l.contains("panicked")),
        "the server panicked"
    );
}

#[test]
fn a_member_that_stops_reading_is_disconnected_and_the_room_goes_on() {
    let (server, addr) = spawn_example_server("chat", &[]);
    let mut alice = Member::join(addr, "alice");
    let mut bob = Member::join(addr, "bob");

    // The laggard: a tiny receive window, and it never reads.
    let lag = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    lag.set_recv_buffer_size(4096).unwrap();
    lag.connect(&addr.into()).unwrap();
    let mut lag = TcpStream::from(lag);
    lag.write_all(b"lag\n").unwrap();
    bob.expect("* lag joined");

    // alice floods in batches; bob (reading) must get each batch while lag's buffers fill.
    let text = "x".repeat(2000);
    let mut kicked = false;
    for batch in 0..200 {
        let lines: String = (0..100).map(|i| format!("{batch}.{i} {text}\n")).collect();
        alice.send(lines.as_bytes());
        let mut got = 0;
        while got < 100 {
            let line = bob.next();
            if line == "* lag was disconnected (too slow)" {
                kicked = true;
            } else {
                assert!(line.starts_with(&format!("<alice> {batch}.")), "{line:.40}");
                got += 1;
            }
        }
        if kicked {
            break;
        }
    }
    assert!(kicked, "the laggard was never disconnected");
    ChildProc::expect_line(&server.stderr, "lag: outbox full, disconnected");

    // The room goes on, and the laggard's connection was really closed.
    alice.say("after the laggard");
    assert_eq!(bob.next(), "<alice> after the laggard");
    bob.say("/who");
    assert_eq!(bob.next(), "* online (2): alice, bob");
    lag.set_read_timeout(Some(LONG)).unwrap();
    let mut sink = [0u8; 64 * 1024];
    loop {
        match lag.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the laggard's connection is still open: {e}"),
        }
    }
}

/// Issue 17.4: a burst pasted in one write (300 short lines, 2.7 kB) reaches every member
/// that reads, in order; nobody is disconnected because the burst came faster than its
/// writer thread was scheduled.
#[test]
fn a_pasted_burst_reaches_every_reading_member() {
    let (server, addr) = spawn_example_server("chat", &[]);
    let readers: Vec<Member> = (0..5)
        .map(|i| Member::join(addr, &format!("r{i}")))
        .collect();
    let mut paster = Member::join(addr, "paster");
    for r in &readers {
        r.expect("* paster joined");
    }
    let burst: String = (0..300).map(|i| format!("line{i:03}\n")).collect();
    assert_eq!(burst.len(), 2400);
    paster.send(burst.as_bytes());
    for r in &readers {
        for i in 0..300 {
            assert_eq!(r.next(), format!("<paster> line{i:03}"));
        }
    }
    paster.say("/who");
    assert_eq!(paster.next(), "* online (6): paster, r0, r1, r2, r3, r4");
    drop((readers, paster));
    let summary = server.stop_with_sigint();
    assert!(summary.contains("0 errors"), "{summary}");
}

/// Issue 17.4: 200 members joining at once each get the others' join notices; none is
/// disconnected by the flood of notices.
#[test]
fn many_members_joining_at_once_are_all_kept() {
    const N: usize = 200;
    let (server, addr) = spawn_example_server("chat", &[]);
    let mut members: Vec<Member> = std::thread::scope(|s| {
        let joins: Vec<_> = (0..N)
            .map(|i| s.spawn(move || Member::join(addr, &format!("m{i:03}"))))
            .collect();
        joins.into_iter().map(|j| j.join().unwrap()).collect()
    });
    let last = members.last_mut().unwrap();
    last.say("/who");
    let who = last.expect("* online (");
    assert!(who.starts_with(&format!("* online ({N}):")), "{who:.60}");
    assert!(
        !server.stderr.try_iter().any(|l| l.contains("disconnected")),
        "a member was disconnected"
    );
    drop(members);
}

#[test]
fn udp_relay_forwards_to_the_other_peers_in_threading_and_sync_modes() {
    for mode in ["threading", "sync"] {
        let (mut server, addr) = spawn_example_server("chat", &["--udp", "--mode", mode]);
        let peers = [udp_client(), udp_client(), udp_client()];
        let mut buf = [0u8; 1024];
        // Hello (an empty datagram) registers each peer, and is answered once.
        for (i, p) in peers.iter().enumerate() {
            p.send_to(b"", addr).unwrap();
            let n = p.recv(&mut buf).unwrap();
            let hello = format!("* relay: you are in, with {i} other peers");
            assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), hello, "{mode}");
        }
        peers[0].send_to(b"hello from 0", addr).unwrap();
        for p in &peers[1..] {
            let (n, from) = p.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello from 0", "{mode}");
            assert_eq!(from, addr, "{mode}");
        }
        // The sender did not get its own datagram: the next one it receives is peer 1's.
        peers[1].send_to(b"hello from 1", addr).unwrap();
        let n = peers[0].recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello from 1", "{mode}");

        let n = peers[2].recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello from 1", "{mode}");

        // Our client: hello, then each line prefixed with its nickname.
        let out = run_example_client("chat", addr, &["--udp", "--nick", "dan"], b"hi all\n");
        assert_eq!(out.code, Some(0), "{mode}: {out:?}");
        let n = peers[2].recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"<dan> hi all", "{mode}");

        server.signal(libc::SIGINT);
        assert_eq!(server.wait_exit(), Some(0), "{mode}");
        ChildProc::expect_line(&server.stderr, "stopped:");
    }
}

#[test]
fn sigint_closes_the_room_and_exits_zero_with_a_summary() {
    let (mut server, addr) = spawn_example_server("chat", &[]);
    let alice = Member::join(addr, "alice");
    server.signal(libc::SIGINT);
    // Members get a short grace period, then their connections are closed.
    alice.expect_closed();
    assert_eq!(server.wait_exit(), Some(0));
    let summary = ChildProc::expect_line(&server.stderr, "stopped:");
    assert!(summary.contains("1 served"), "{summary}");
}

#[test]
fn client_exits_non_zero_when_the_server_is_killed() {
    let (mut server, addr) = spawn_example_server("chat", &[]);
    let mut cmd = std::process::Command::new(example_path("chat"));
    cmd.args(["client", "--addr", &addr.to_string()]);
    let mut client = ChildProc::spawn_with_stdin(cmd);
    ChildProc::expect_line(&client.stdout, "* welcome");
    server.child.kill().unwrap();
    server.wait_exit();
    // stdin is still open: the client notices on its own.
    assert_eq!(client.wait_exit(), Some(1));
    let why = ChildProc::expect_line(&client.stderr, "chat client:");
    assert!(why.contains("server"), "{why}");
}

#[test]
fn client_without_a_server_fails_with_a_message() {
    assert_client_fails_cleanly("chat", free_tcp_addr(), &[], b"hello\n", "cannot connect");
}

#[test]
fn modes_that_cannot_share_a_room_are_refused() {
    for (args, needed) in [
        (&["--mode", "sync"][..], "--mode evented"),
        (&["--mode", "forking"], "--mode evented"),
        (&["--mode", "threading"], "--mode evented"),
        (&["--udp", "--mode", "forking"], "--mode threading"),
        (&["--udp", "--mode", "evented"], "--mode threading"),
    ] {
        let mut cmd = std::process::Command::new(example_path("chat"));
        cmd.args(["server", "--addr", "127.0.0.1:0"]).args(args);
        let mut server = ChildProc::spawn(cmd);
        assert_eq!(server.wait_exit(), Some(2), "{args:?}");
        let why = ChildProc::expect_line(&server.stderr, "error:");
        assert!(why.contains(needed), "{args:?}: {why}");
    }
}

/// Evented: 300 members in the room, talking, hold no thread each (the old room had a
/// reader and a writer thread per member).
#[test]
fn a_room_of_300_members_holds_no_thread_per_member() {
    const N: usize = 300;
    let (server, addr) = spawn_example_server("chat", &[]);
    let mut members: Vec<Member> = (0..N)
        .map(|i| Member::join(addr, &format!("m{i:03}")))
        .collect();
    members[0].say("hello all");
    for m in &members[1..] {
        m.expect("<m000> hello all");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(threads < 32, "{threads} threads for {N} members");
    drop(members);
}
