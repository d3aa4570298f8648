//! `handle_input_lent` delivers exactly what `handle_input` does, for every chunking of the
//! input, with and without the reliable session (whose start in the middle of an input
//! switches to the copying path), and dropping its guard before taking the event loses
//! nothing.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::{
    Connection, Event, LinkConfig, NoSession, Outgoing, Reliable, SessionOffer, SessionSlot,
};
use crate::crc::DefaultCrc;
use crate::time::Instant;
use crate::wire::{Command, Flags};

type Link<S> = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 8, DefaultCrc, S>;
type WithSession = Reliable<DefaultCrc, 16, 8192, 0, 0>;

fn new_link<S: SessionSlot<DefaultCrc>>(seed: u32, session: bool) -> Link<S> {
    let cfg = LinkConfig {
        salt_seed: seed,
        session: session.then_some(SessionOffer::new(u64::from(seed))),
        ..LinkConfig::default()
    };
    Link::new(Instant::ZERO, &cfg, Default::default()).unwrap()
}

fn drain<S: SessionSlot<DefaultCrc>>(c: &mut Link<S>, wire: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        let n = c.poll_transmit(Instant::ZERO, &mut buf);
        if n == 0 {
            break;
        }
        wire.extend_from_slice(&buf[..n]);
    }
}

/// Everything A sends to B: its LNK_CONN, one-way messages of several aux sizes, and a
/// transaction with data. With the session, A first gets B's LNK_CONN (it holds its frames
/// until then).
fn stream<S: SessionSlot<DefaultCrc>>(session: bool) -> Vec<u8> {
    let now = Instant::ZERO;
    let mut a = new_link::<S>(1, session);
    if session {
        let mut b_conn = Vec::new();
        drain(&mut new_link::<S>(2, session), &mut b_conn);
        let mut input = &b_conn[..];
        while !input.is_empty() {
            let used = a.handle_input(now, input);
            input = &input[used..];
            while a.poll_event().is_some() {}
        }
    }
    let mut wire = Vec::new();
    for len in [0usize, 1, 63, 64, 65, 200, 1000] {
        let aux: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        let msg = Outgoing::new(Command::DbgShell).with_aux(&aux);
        a.send_one_way(now, &msg, false, None).unwrap();
        drain(&mut a, &mut wire);
    }
    let req = Outgoing::new(Command::DbgShell).with_aux(b"request");
    let txn = a.open(now, &req, Flags::empty(), None).unwrap();
    let more = Outgoing::new(Command::DbgShell).with_aux(b"more data");
    a.send(now, txn, &more, Flags::DELETE).unwrap();
    drain(&mut a, &mut wire);
    wire
}

fn describe(ev: &Event<'_>) -> String {
    match ev {
        Event::OneWay { msg } => format!("oneway {:?}", msg.aux),
        Event::Opened { msg, .. } => format!("opened {:?}", msg.aux),
        Event::Message { msg, .. } => format!("message {:?}", msg.aux),
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Copy,
    Lend,
    /// Lend, but drop the guard before taking any event.
    LendThenDrop,
}

fn receive<S: SessionSlot<DefaultCrc>>(
    wire: &[u8],
    chunk: usize,
    mode: Mode,
    session: bool,
) -> Vec<String> {
    let now = Instant::ZERO;
    let mut b = new_link::<S>(2, session);
    let mut log = Vec::new();
    let mut sink = Vec::new();
    for piece in wire.chunks(chunk) {
        let mut input = piece;
        while !input.is_empty() {
            let used = match mode {
                Mode::Copy => b.handle_input(now, input),
                Mode::Lend => {
                    let mut lent = b.handle_input_lent(now, input);
                    while let Some(ev) = lent.poll_event() {
                        log.push(describe(&ev));
                    }
                    lent.used()
                }
                Mode::LendThenDrop => b.handle_input_lent(now, input).used(),
            };
            input = &input[used..];
            while let Some(ev) = b.poll_event() {
                log.push(describe(&ev));
            }
            sink.clear();
            drain(&mut b, &mut sink);
        }
    }
    assert_eq!(b.stats().violations.total(), 0);
    log
}

fn check<S: SessionSlot<DefaultCrc>>(session: bool) {
    let wire = stream::<S>(session);
    let want = receive::<S>(&wire, wire.len(), Mode::Copy, session);
    assert!(want
        .iter()
        .any(|e| e.starts_with("oneway") && e.len() > 1000));
    assert!(want.contains(&format!("opened {:?}", b"request")));
    assert!(want.contains(&format!("message {:?}", b"more data")));
    // Miri runs the test too: fewer (and no byte-at-a-time) chunkings there.
    let chunks: &[usize] = if cfg!(miri) {
        &[7, 100, wire.len()]
    } else {
        &[1, 7, 64, 100, 333, wire.len()]
    };
    for &chunk in chunks {
        for mode in [Mode::Copy, Mode::Lend, Mode::LendThenDrop] {
            assert_eq!(
                receive::<S>(&wire, chunk, mode, session),
                want,
                "chunk {chunk}, session {session}"
            );
        }
    }
}

#[test]
fn lent_input_gives_the_same_events_as_copied_input_for_every_chunking() {
    check::<NoSession>(false);
}

#[test]
fn lent_input_gives_the_same_events_when_the_session_starts_mid_input() {
    check::<WithSession>(true);
}
