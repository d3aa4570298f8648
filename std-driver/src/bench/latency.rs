//! Request/reply round trips, one at a time (ping-pong), on one loopback connection per kind
//! of link, the kinds taking turns in blocks so that load on the machine hits them alike.
//!
//! DMSG: the client opens a transaction with one CREATE|DELETE DBG_SHELL frame carrying the
//! payload; the server answers with one REPLY|DELETE frame carrying the same bytes; the
//! round trip ends when the client has the reply. Baseline: one length-prefixed frame each
//! way.

use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant as WallClock};

use dmsg_core::link::{Event, Outgoing};
use dmsg_core::wire::{Command, Flags};

use super::cpu;
use super::engine::{Endpoint, EngineError, Flavor, Plain, ReadOutcome, Then, Wait, WithSession};
use super::link_kind::{socket_pair, Kind, LINK_THREAD_STACK};
use super::raw::{self, FrameReader};
use super::stats::Samples;
use super::throughput::endpoint;
use crate::clock::Clock;

const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// Round trips per turn before the next kind of link takes over.
pub const BLOCK: u64 = 20;

/// The client end of one kind of link.
enum Client {
    Raw {
        stream: TcpStream,
        reader: FrameReader,
        out: Vec<u8>,
    },
    Dmsg(Endpoint<Plain>),
    Session(Endpoint<WithSession>),
}

/// A client and its server thread.
struct Pair {
    kind: Kind,
    client: Client,
    server: JoinHandle<Result<(u64, Option<Duration>), String>>,
}

impl Pair {
    fn new(kind: Kind, listener: &TcpListener) -> Result<Pair, String> {
        let (c, s) = socket_pair(listener).map_err(|e| format!("loopback connect: {e}"))?;
        let spawn = thread::Builder::new()
            .name(format!("bench-echo-{kind}"))
            .stack_size(LINK_THREAD_STACK);
        let server = match kind {
            Kind::Raw => spawn.spawn(move || {
                let cpu = cpu::thread_cpu_time();
                let answered = raw::echo(s).map_err(|e| e.to_string())?;
                Ok((answered, cpu::since(cpu)))
            }),
            Kind::Dmsg => spawn.spawn(move || dmsg_echo::<Plain>(s, false)),
            Kind::Secure => spawn.spawn(move || dmsg_echo::<Plain>(s, true)),
            Kind::Session => spawn.spawn(move || dmsg_echo::<WithSession>(s, false)),
        }
        .map_err(|e| format!("cannot start a thread: {e}"))?;
        let fail = |e: EngineError| format!("{kind} client: {e}");
        let client = match kind {
            Kind::Raw => Client::Raw {
                stream: c,
                reader: FrameReader::new(),
                out: Vec::new(),
            },
            Kind::Dmsg => Client::Dmsg(dmsg_client::<Plain>(c, false).map_err(fail)?),
            Kind::Secure => Client::Dmsg(dmsg_client::<Plain>(c, true).map_err(fail)?),
            Kind::Session => Client::Session(dmsg_client::<WithSession>(c, false).map_err(fail)?),
        };
        Ok(Pair {
            kind,
            client,
            server,
        })
    }

    /// One round trip with `payload`; returns its time.
    fn round_trip(&mut self, payload: &[u8]) -> Result<Duration, String> {
        let kind = self.kind;
        match &mut self.client {
            Client::Raw {
                stream,
                reader,
                out,
            } => {
                let t = WallClock::now();
                raw::write_frame(stream, out, payload).map_err(|e| e.to_string())?;
                match reader.next(stream).map_err(|e| e.to_string())? {
                    Some(reply) if reply.len() == payload.len() => Ok(t.elapsed()),
                    Some(_) => Err("raw echo answered with a different length".into()),
                    None => Err("raw echo server closed".into()),
                }
            }
            Client::Dmsg(ep) => dmsg_round_trip(ep, payload),
            Client::Session(ep) => dmsg_round_trip(ep, payload),
        }
        .map_err(|e| format!("{kind}: {e}"))
    }

    /// Closes the client and collects the server's count of answers and its CPU time.
    fn finish(self) -> Result<(u64, Option<Duration>), String> {
        drop(self.client);
        self.server
            .join()
            .map_err(|_| "an echo server thread panicked".to_string())?
    }
}

fn dmsg_client<S: Flavor>(stream: TcpStream, secure: bool) -> Result<Endpoint<S>, EngineError> {
    let mut ep = endpoint::<S>(stream, 0xC11E47, Clock::new(), secure.then_some(true))?;
    ep.establish(SETUP_LIMIT)?;
    Ok(ep)
}

fn dmsg_round_trip<S: Flavor>(ep: &mut Endpoint<S>, payload: &[u8]) -> Result<Duration, String> {
    let fail = |e: EngineError| e.to_string();
    let req = Outgoing::new(Command::DbgShell).with_aux(payload);
    let t = WallClock::now();
    let now = ep.now();
    let txn = ep
        .conn
        .open(now, &req, Flags::DELETE, None)
        .map_err(|e| fail(e.into()))?;
    ep.flush().map_err(fail)?;
    let mut reply_len = None;
    while reply_len.is_none() {
        if ep.read(Wait::Tick).map_err(fail)? == ReadOutcome::Eof {
            return Err("the echo server closed".into());
        }
        ep.pump(|ev, _| {
            if let Event::Message { txn: t2, msg } = ev {
                if *t2 == txn {
                    reply_len = Some(msg.aux.len());
                }
            }
            Then::Nothing
        })
        .map_err(fail)?;
        ep.flush().map_err(fail)?;
        ep.tick().map_err(fail)?;
    }
    let elapsed = t.elapsed();
    if reply_len != Some(payload.len()) {
        return Err(format!(
            "the reply carried {reply_len:?} bytes, not {}",
            payload.len()
        ));
    }
    Ok(elapsed)
}

/// The DMSG echo server: answers every transaction with its request's payload, until the
/// client closes; returns how many it answered and its CPU time.
fn dmsg_echo<S: Flavor>(
    stream: TcpStream,
    secure: bool,
) -> Result<(u64, Option<Duration>), String> {
    let fail = |e: EngineError| e.to_string();
    let cpu = cpu::thread_cpu_time();
    let mut ep =
        endpoint::<S>(stream, 0xEC40, Clock::new(), secure.then_some(false)).map_err(fail)?;
    let mut answered = 0u64;
    loop {
        match ep.read(Wait::Tick) {
            Ok(ReadOutcome::Eof) => return Ok((answered, cpu::since(cpu))),
            Ok(_) => {}
            Err(EngineError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok((answered, cpu::since(cpu)))
            }
            Err(e) => return Err(fail(e)),
        }
        ep.pump(|ev, scratch| match ev {
            Event::Opened { txn, msg } => {
                scratch.extend_from_slice(msg.aux);
                answered += 1;
                Then::Reply(*txn)
            }
            _ => Then::Nothing,
        })
        .map_err(fail)?;
        ep.flush().map_err(fail)?;
        ep.tick().map_err(fail)?;
    }
}

/// The round trips of one kind of link.
pub struct Measured {
    /// The kind of link.
    pub kind: Kind,
    /// Every measured round trip.
    pub samples: Samples,
    /// CPU time of client and server per round trip, in ns (`None` where thread CPU time
    /// is not measurable).
    pub cpu_ns_per_round_trip: Option<f64>,
}

/// Round trips of `size` bytes: `count` per kind (after a warm-up of a tenth, at most 200,
/// not counted), in turns of [`BLOCK`]. `progress` is told after each turn (kind, done).
pub fn measure(
    kinds: &[Kind],
    listener: &TcpListener,
    size: usize,
    count: u64,
    progress: &mut dyn FnMut(Kind, u64),
) -> Result<Vec<Measured>, String> {
    let payload = vec![0x5Au8; size];
    let mut pairs = Vec::new();
    for &k in kinds {
        pairs.push(Pair::new(k, listener)?);
    }
    let warm = (count / 10).min(200);
    for p in pairs.iter_mut() {
        for _ in 0..warm {
            p.round_trip(&payload)?;
        }
    }
    let mut samples: Vec<Samples> = kinds.iter().map(|_| Samples::new()).collect();
    let mut client_cpu: Vec<Option<Duration>> =
        kinds.iter().map(|_| Some(Duration::ZERO)).collect();
    let mut done = 0;
    while done < count {
        let n = BLOCK.min(count - done);
        for ((p, s), c) in pairs
            .iter_mut()
            .zip(samples.iter_mut())
            .zip(client_cpu.iter_mut())
        {
            let before = cpu::thread_cpu_time();
            for _ in 0..n {
                s.push(p.round_trip(&payload)?);
            }
            *c = match (*c, cpu::since(before)) {
                (Some(total), Some(turn)) => Some(total + turn),
                _ => None,
            };
            progress(p.kind, done + n);
        }
        done += n;
    }
    let mut out = Vec::new();
    for ((p, s), c) in pairs.into_iter().zip(samples).zip(client_cpu) {
        let kind = p.kind;
        let (answered, server_cpu) = p.finish()?;
        if answered != warm + count {
            return Err(format!(
                "{kind} echo server answered {answered} of {} requests",
                warm + count
            ));
        }
        // CPU per round trip: the client's over the measured ones, the server's over all it
        // answered (warm-up included).
        let per_rt = match (c, server_cpu) {
            (Some(c), Some(sv)) if count > 0 && answered > 0 => {
                Some(c.as_nanos() as f64 / count as f64 + sv.as_nanos() as f64 / answered as f64)
            }
            _ => None,
        };
        out.push(Measured {
            kind,
            samples: s,
            cpu_ns_per_round_trip: per_rt,
        });
    }
    Ok(out)
}
