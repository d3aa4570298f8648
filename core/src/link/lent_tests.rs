//! `handle_input_lent` delivers exactly what `handle_input` does, for every chunking of the
//! input, and dropping its guard before taking the event loses nothing.

use std::format;
use std::string::String;
use std::vec::Vec;

use super::{Connection, Event, LinkConfig, Outgoing};
use crate::time::Instant;
use crate::wire::{Command, Flags};

type Link = Connection<{ 8 * 64 + 1024 }, 1024, 4096, 8>;

fn new_link(seed: u32) -> Link {
    let cfg = LinkConfig {
        salt_seed: seed,
        ..LinkConfig::default()
    };
    Link::new(Instant::ZERO, &cfg, Default::default()).unwrap()
}

/// Everything A sends: its LNK_CONN, one-way messages of several aux sizes, and a
/// transaction with data.
fn stream() -> Vec<u8> {
    let now = Instant::ZERO;
    let mut a = new_link(1);
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    let mut drain = |a: &mut Link, wire: &mut Vec<u8>| loop {
        let n = a.poll_transmit(now, &mut buf);
        if n == 0 {
            break;
        }
        wire.extend_from_slice(&buf[..n]);
    };
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

fn receive(wire: &[u8], chunk: usize, mode: Mode) -> Vec<String> {
    let now = Instant::ZERO;
    let mut b = new_link(2);
    let mut log = Vec::new();
    let mut sink = [0u8; 4096];
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
            while b.poll_transmit(now, &mut sink) > 0 {}
        }
    }
    assert_eq!(b.stats().violations.total(), 0);
    log
}

#[test]
fn lent_input_gives_the_same_events_as_copied_input_for_every_chunking() {
    let wire = stream();
    let want = receive(&wire, wire.len(), Mode::Copy);
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
            assert_eq!(receive(&wire, chunk, mode), want, "chunk {chunk}");
        }
    }
}
