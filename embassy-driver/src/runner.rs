//! The async runner: one TCP connection to the hub at a time, reconnecting with backoff.

use core::future::{pending as never, poll_fn, Future};
use core::pin::{pin, Pin};

use dmsg_core::link::SendError;
use dmsg_core::time::{Duration, Instant};
use embassy_futures::select::{select, select4, Either, Either4};
use embassy_net::tcp::{self, TcpSocket};
use embassy_net::Stack;
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{with_timeout, Timer};

use crate::backoff::{Backoff, BackoffConfig};
use crate::binding::{ConfigError, CoreLink, Leaf, LeafConnection, Polled};
use crate::types::{Channels, Down, LeafCommand, LeafConfig, LeafEvent};

#[cfg(feature = "secure")]
use crate::secure::{Secure, SecureLink};

/// The current time as the core counts it: microseconds of `embassy_time::Instant::now()`.
pub fn now() -> Instant {
    Instant::from_micros(embassy_time::Instant::now().as_micros())
}

/// The first embassy-time tick at or after `t` (so a timer never fires before the core's
/// deadline, which would only cost a wasted wake-up); `Instant::MAX` when out of range.
pub fn to_embassy_instant(t: Instant) -> embassy_time::Instant {
    let micros = t.as_micros();
    match embassy_time::Instant::try_from_micros(micros) {
        Some(i) if i.as_micros() >= micros => i,
        Some(i) => embassy_time::Instant::from_ticks(i.as_ticks().saturating_add(1)),
        None => embassy_time::Instant::MAX,
    }
}

/// `d` in embassy-time's units, saturating at one year (far beyond any setting that makes
/// sense, and safe from overflow at every tick rate).
pub fn to_embassy_duration(d: Duration) -> embassy_time::Duration {
    const YEAR_US: u64 = 365 * 24 * 3600 * 1_000_000;
    embassy_time::Duration::from_micros(d.as_micros().min(YEAR_US))
}

/// The leaf's runner: owns the connection state and drives it over a [`TcpSocket`] on any
/// embassy-net [`Stack`] (the stack is independent of the network driver).
///
/// - `M`: the channels' mutex ([`NoopRawMutex`](embassy_sync::blocking_mutex::raw::NoopRawMutex)
///   when the application runs on the same executor, `CriticalSectionRawMutex` otherwise);
/// - `A`, `NC`, `NE`: see [`Channels`];
/// - `L`: the core link, by default [`LeafConnection`] (1 KiB aux in, 8 transactions per
///   side, 1 KiB output queue, the half-byte-table CRC); `dmsg_core::link::McuConnection` has a
///   2 KiB output queue, for leaves that send 1 KiB of aux;
///   `dmsg_core::link::ReliableMcuConnection` runs the reliable session when the hub offers
///   it too: a lost connection suspends the link, and the next one resumes it with nothing
///   lost (while it is away, commands are refused and its timers wait).
///
/// The runner holds the connection (about 6 KiB with `LeafConnection` on a 32-bit MCU): keep
/// it in a `StaticCell` and give its task a `&'static mut Runner`, since an `async fn`
/// argument is stored twice in the task's future.
pub struct Runner<'d, M, const A: usize, const NC: usize, const NE: usize, L = LeafConnection>
where
    M: RawMutex,
    L: CoreLink,
{
    stack: Stack<'d>,
    config: &'d LeafConfig<'d>,
    channels: &'d Channels<M, A, NC, NE>,
    socket_rx: &'d mut [u8],
    socket_tx: &'d mut [u8],
    leaf: Option<Leaf<L, A>>,
    backoff: Backoff,
    connections: u32,
    seed: u32,
    #[cfg(feature = "secure")]
    secure: Option<Secure<'d>>,
}

impl<'d, M, const A: usize, const NC: usize, const NE: usize, L> Runner<'d, M, A, NC, NE, L>
where
    M: RawMutex,
    L: CoreLink,
{
    /// A runner for the leaf `config`, talking to the application over `channels`, with the
    /// TCP socket's receive and transmit buffers `socket_rx` and `socket_tx` (a few KiB each;
    /// the transmit buffer should hold at least one maximal frame). `seed` replaces
    /// `config.backoff.seed`: take it from a hardware RNG, so `config` can be a `static` in
    /// flash and still every device retries at its own moments.
    ///
    /// Fails if a label in `config` is too long or contains a NUL byte.
    pub fn new(
        stack: Stack<'d>,
        config: &'d LeafConfig<'d>,
        channels: &'d Channels<M, A, NC, NE>,
        socket_rx: &'d mut [u8],
        socket_tx: &'d mut [u8],
        seed: u32,
    ) -> Result<Self, ConfigError> {
        Leaf::<L, A>::check(config)?;
        let backoff = BackoffConfig {
            seed,
            ..config.backoff
        };
        Ok(Runner {
            stack,
            config,
            channels,
            socket_rx,
            socket_tx,
            leaf: None,
            backoff: Backoff::new(backoff),
            connections: 0,
            seed,
            #[cfg(feature = "secure")]
            secure: None,
        })
    }

    /// Feature `secure`: runs every connection through dmsg-core's secure channel (Noise IK
    /// as the initiator, `link.hub` the hub's static key; see [`crate::secure`]). Fails with
    /// [`ConfigError::SecureSession`] for a link with the reliable session.
    ///
    /// ```no_run
    /// # use dmsg_embassy::{Runner, SecureLink};
    /// # use dmsg_core::secure::{Keypair, PublicKey, SecureConfig};
    /// # use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    /// # fn f<'d>(runner: Runner<'d, NoopRawMutex, 64, 2, 2>, rng: &'d mut dyn dmsg_core::secure::rand_core::CryptoRng) {
    /// const LEAF_SECRET: [u8; 32] = [7; 32]; // from `dmsg keygen`: never share it
    /// const HUB_PUBLIC: PublicKey = PublicKey([9; 32]); // the hub's `<name>.pub`
    /// let runner = runner
    ///     .with_secure(SecureLink {
    ///         local: Keypair::from_secret(LEAF_SECRET),
    ///         hub: HUB_PUBLIC,
    ///         config: SecureConfig::default(),
    ///         rng,
    ///     })
    ///     .unwrap();
    /// # }
    /// ```
    #[cfg(feature = "secure")]
    pub fn with_secure(mut self, link: SecureLink<'d>) -> Result<Self, ConfigError> {
        if L::SESSION {
            return Err(ConfigError::SecureSession);
        }
        self.secure = Some(Secure::new(link));
        Ok(self)
    }

    /// Feature `secure`: the secure channels' counters (handshakes, records, failures by
    /// kind), over every connection so far; `None` without [`with_secure`](Self::with_secure).
    #[cfg(feature = "secure")]
    pub fn secure_stats(&self) -> Option<dmsg_core::secure::SecureStats> {
        self.secure.as_ref().map(Secure::stats)
    }

    /// The current (or last) connection's leaf state, e.g. for its counters.
    pub fn leaf(&self) -> Option<&Leaf<L, A>> {
        self.leaf.as_ref()
    }

    /// Runs forever: waits for the network, connects, drives the link until it dies, backs
    /// off, and again. Spawn it in its own task.
    pub async fn run(&mut self) -> ! {
        let ch = self.channels;
        let cfg = self.config;
        loop {
            offline(ch, pin!(self.stack.wait_config_up())).await;
            let salt = self.seed ^ self.connections.wrapping_mul(0x9E37_79B9);
            self.connections = self.connections.wrapping_add(1);

            let mut socket = TcpSocket::new(self.stack, self.socket_rx, self.socket_tx);
            socket.set_nagle_enabled(false);
            info!("dmsg: connecting");
            debug!("dmsg: hub {:?}", cfg.hub);
            let mut connected = None;
            {
                let timeout = to_embassy_duration(cfg.connect_timeout);
                let connect = async {
                    connected = Some(with_timeout(timeout, socket.connect(cfg.hub)).await);
                };
                offline(ch, pin!(connect)).await;
            }
            let clean = match connected {
                Some(Ok(Ok(()))) => {
                    info!("dmsg: connected");
                    #[cfg(feature = "secure")]
                    let started = Wire {
                        secure: self.secure.as_mut(),
                    }
                    .start(ch)
                    .await;
                    #[cfg(not(feature = "secure"))]
                    let started = true;
                    if started {
                        let clean = session(
                            &mut socket,
                            &mut self.leaf,
                            wire!(self),
                            cfg,
                            ch,
                            salt,
                            &mut self.backoff,
                        )
                        .await;
                        #[cfg(feature = "secure")]
                        if clean {
                            wire!(self).close(&mut socket).await;
                        }
                        clean
                    } else {
                        false
                    }
                }
                Some(Ok(Err(e))) => {
                    warn!("dmsg: connect failed");
                    debug!("dmsg: {:?}", e);
                    let _ = ch.events.try_send(LeafEvent::Down(Down::Connect(e)));
                    false
                }
                _ => {
                    warn!("dmsg: connect timed out");
                    let _ = ch.events.try_send(LeafEvent::Down(Down::ConnectTimeout));
                    false
                }
            };
            if clean {
                socket.close();
            } else {
                socket.abort();
            }
            // Let the FIN or RST out before the socket is dropped.
            {
                let linger = async {
                    let _ = with_timeout(embassy_time::Duration::from_millis(500), socket.flush())
                        .await;
                };
                offline(ch, pin!(linger)).await;
            }
            drop(socket);
            #[cfg(feature = "secure")]
            if let Some(secure) = self.secure.as_mut() {
                secure.end();
            }

            let delay = self.backoff.next_delay();
            info!("dmsg: reconnecting in {} ms", delay.as_millis());
            offline(ch, pin!(Timer::after(to_embassy_duration(delay)))).await;
        }
    }
}

/// Runs `fut` while the link is down, refusing every command with [`SendError::Closed`].
/// (One instance for every wait: `dyn` keeps the code small.)
async fn offline<M, const A: usize, const NC: usize, const NE: usize>(
    ch: &Channels<M, A, NC, NE>,
    mut fut: Pin<&mut dyn Future<Output = ()>>,
) where
    M: RawMutex,
{
    loop {
        match select(fut.as_mut(), ch.commands.receive()).await {
            Either::First(()) => return,
            Either::Second(cmd) => {
                if let Some(ev) = cmd.outcome(Err(SendError::Closed)) {
                    let _ = ch.events.try_send(ev);
                }
            }
        }
    }
}

/// The [`Wire`] of a runner's connection (a macro: it borrows one field of the runner).
macro_rules! wire {
    ($runner:expr) => {
        Wire {
            #[cfg(feature = "secure")]
            secure: $runner.secure.as_mut(),
            #[cfg(not(feature = "secure"))]
            _p: core::marker::PhantomData,
        }
    };
}
use wire;

/// The byte path between the socket and the leaf: in the clear, or (feature `secure`, with
/// [`Runner::with_secure`]) through the connection's secure channel.
struct Wire<'a, 'd> {
    #[cfg(feature = "secure")]
    secure: Option<&'a mut Secure<'d>>,
    #[cfg(not(feature = "secure"))]
    _p: core::marker::PhantomData<(&'a mut (), &'d ())>,
}

#[cfg(not(feature = "secure"))]
impl Wire<'_, '_> {
    /// Writes everything the leaf has queued to the socket (step 1 of the drive contract).
    async fn flush<L: CoreLink, const A: usize>(
        &mut self,
        socket: &mut TcpSocket<'_>,
        leaf: &mut Leaf<L, A>,
    ) -> Result<(), tcp::Error> {
        while leaf.pending_transmit() > 0 {
            let t = now();
            socket
                .write_with(|buf| (leaf.poll_transmit(t, buf), ()))
                .await?;
        }
        Ok(())
    }

    fn input<L: CoreLink, const A: usize>(&mut self, leaf: &mut Leaf<L, A>, buf: &[u8]) -> usize {
        leaf.handle_input(now(), buf)
    }

    fn poll_timeout<L: CoreLink, const A: usize>(&self, leaf: &Leaf<L, A>) -> Option<Instant> {
        leaf.poll_timeout()
    }

    fn handle_timeout<L: CoreLink, const A: usize>(&mut self, leaf: &mut Leaf<L, A>) {
        leaf.handle_timeout(now())
    }

    fn handle_eof(&mut self) {}
}

#[cfg(feature = "secure")]
impl Wire<'_, '_> {
    /// Starts the connection's secure channel; false (the application told) if it cannot.
    async fn start<M: RawMutex, const A: usize, const NC: usize, const NE: usize>(
        &mut self,
        ch: &Channels<M, A, NC, NE>,
    ) -> bool {
        let Some(secure) = self.secure.as_deref_mut() else {
            return true;
        };
        match secure.start(now()) {
            Ok(()) => true,
            Err(e) => {
                error!("dmsg: cannot start the secure channel");
                ch.events.send(LeafEvent::SecureFailed(e)).await;
                false
            }
        }
    }

    /// Sends our authenticated close (the FIN record) before the TCP close.
    async fn close(&mut self, socket: &mut TcpSocket<'_>) {
        let Some(secure) = self.secure.as_deref_mut() else {
            return;
        };
        if secure.close() {
            let _ = write_secure(socket, secure).await;
        }
    }

    async fn flush<L: CoreLink, const A: usize>(
        &mut self,
        socket: &mut TcpSocket<'_>,
        leaf: &mut Leaf<L, A>,
    ) -> Result<(), tcp::Error> {
        let Some(secure) = self.secure.as_deref_mut() else {
            while leaf.pending_transmit() > 0 {
                let t = now();
                socket
                    .write_with(|buf| (leaf.poll_transmit(t, buf), ()))
                    .await?;
            }
            return Ok(());
        };
        while secure.stage(leaf, now()) {
            write_secure(socket, secure).await?;
        }
        Ok(())
    }

    fn input<L: CoreLink, const A: usize>(&mut self, leaf: &mut Leaf<L, A>, buf: &[u8]) -> usize {
        match self.secure.as_deref_mut() {
            Some(secure) => secure.input(leaf, now(), buf),
            None => leaf.handle_input(now(), buf),
        }
    }

    /// Gives the leaf decrypted plaintext that waited in the channel (the leaf stopped taking
    /// it for an event); true if it took some.
    fn feed<L: CoreLink, const A: usize>(&mut self, leaf: &mut Leaf<L, A>) -> bool {
        self.secure
            .as_deref_mut()
            .is_some_and(|secure| secure.feed(leaf, now()))
    }

    fn poll_timeout<L: CoreLink, const A: usize>(&self, leaf: &Leaf<L, A>) -> Option<Instant> {
        let link = leaf.poll_timeout();
        match self.secure.as_deref().and_then(Secure::poll_timeout) {
            Some(t) => Some(link.map_or(t, |l| l.min(t))),
            None => link,
        }
    }

    fn handle_timeout<L: CoreLink, const A: usize>(&mut self, leaf: &mut Leaf<L, A>) {
        let t = now();
        if let Some(secure) = self.secure.as_deref_mut() {
            secure.handle_timeout(t);
        }
        leaf.handle_timeout(t)
    }

    fn handle_eof(&mut self) {
        if let Some(secure) = self.secure.as_deref_mut() {
            secure.handle_eof();
        }
    }

    /// A failed secure channel ends the link: the application gets the typed error, then the
    /// link's `Down`.
    async fn check<M: RawMutex, L: CoreLink, const A: usize, const NC: usize, const NE: usize>(
        &mut self,
        leaf: &mut Leaf<L, A>,
        ch: &Channels<M, A, NC, NE>,
    ) {
        if let Some(e) = self.secure.as_deref_mut().and_then(Secure::take_error) {
            ch.events.send(LeafEvent::SecureFailed(e)).await;
            leaf.handle_close();
        }
    }
}

/// Writes the secure channel's ciphertext to the socket.
#[cfg(feature = "secure")]
async fn write_secure(
    socket: &mut TcpSocket<'_>,
    secure: &mut Secure<'_>,
) -> Result<(), tcp::Error> {
    let mut n = 1;
    while n > 0 {
        n = socket
            .write_with(|buf| {
                let n = secure.transmit(buf);
                (n, n)
            })
            .await?;
    }
    Ok(())
}

/// One connection's life, following the drive contract of `dmsg_core::link`: after every
/// input (bytes, a timeout, a command) transmit everything, then take the events one at a
/// time (transmitting again after each, since the leaf may answer by itself), then wait for
/// the next input. Input is read only when no event is waiting for the application, so the
/// bytes stay in the socket's buffer (and TCP's window closes) while the application is busy.
///
/// Returns once the link closed and the application got [`LeafEvent::Down`] (true if it
/// closed cleanly), or its reliable session was suspended and the application got
/// [`LeafEvent::Suspended`] (false; the next connection resumes it).
async fn session<M, L, const A: usize, const NC: usize, const NE: usize>(
    socket: &mut TcpSocket<'_>,
    slot: &mut Option<Leaf<L, A>>,
    mut wire: Wire<'_, '_>,
    cfg: &LeafConfig<'_>,
    ch: &Channels<M, A, NC, NE>,
    salt: u32,
    backoff: &mut Backoff,
) -> bool
where
    M: RawMutex,
    L: CoreLink,
{
    // A reliable session suspended on the last connection resumes on this one; one that
    // cannot (it died meanwhile) first hands the application its transactions' ends and
    // its `Down`.
    let resumed = match slot.as_mut() {
        Some(old) if L::SESSION && old.is_suspended() => {
            if old.resume(now()) {
                info!("dmsg: resuming the session");
                true
            } else {
                loop {
                    match old.poll(now(), cfg) {
                        Polled::Event(ev) => ch.events.send(ev).await,
                        Polled::Handled => {}
                        Polled::Idle => break,
                    }
                }
                false
            }
        }
        _ => false,
    };
    let leaf = match slot {
        Some(leaf) if resumed => leaf,
        _ => match Leaf::new(now(), cfg, salt) {
            Ok(leaf) => slot.insert(leaf),
            Err(e) => {
                error!("dmsg: cannot start a link");
                debug!("dmsg: {:?}", e);
                return false;
            }
        },
    };
    let mut pending: Option<LeafEvent<A>> = None;
    // The application's command being carried out. One that finds no room even after the
    // flush (with the reliable session the retransmit window frees only as the hub
    // acknowledges) stays here and is retried after every input, no other command being
    // taken meanwhile; it is refused if the link goes down first.
    let mut held: Option<LeafCommand<A>> = None;
    loop {
        // 1 and 2: transmit (and carry out the held command when it fits: then transmit
        // again); take events until one waits for the application.
        loop {
            #[cfg(feature = "secure")]
            wire.check(leaf, ch).await;
            if wire.flush(socket, leaf).await.is_err() {
                leaf.handle_close();
            }
            #[cfg(feature = "secure")]
            wire.check(leaf, ch).await;
            if pending.is_some() {
                break;
            }
            let Some(cmd) = held.take() else { break };
            let res = if leaf.is_closed() || leaf.is_suspended() {
                Err(SendError::Closed)
            } else {
                leaf.command(now(), &cmd)
            };
            if let Err(SendError::WouldBlock { .. }) = res {
                held = Some(cmd);
                break;
            }
            if let Err(e) = res {
                debug!("dmsg: command refused: {:?}", e);
            }
            pending = cmd.outcome(res);
        }
        while pending.is_none() {
            match leaf.poll(now(), cfg) {
                Polled::Event(ev) => {
                    if let LeafEvent::PeerConn { .. } | LeafEvent::Resumed { .. } = ev {
                        backoff.reset();
                    }
                    pending = Some(ev);
                }
                Polled::Handled => {
                    if wire.flush(socket, leaf).await.is_err() {
                        leaf.handle_close();
                    }
                    #[cfg(feature = "secure")]
                    wire.check(leaf, ch).await;
                }
                Polled::Idle => break,
            }
        }
        if L::SESSION && pending.is_none() && leaf.is_suspended() {
            // The transport is gone and the application knows: reconnect and resume.
            return false;
        }

        // Plaintext the leaf left in the secure channel for an event it has now handed out:
        // give it before waiting for more input.
        #[cfg(feature = "secure")]
        if pending.is_none() && wire.feed(leaf) {
            continue;
        }

        // 3: wait for the application, a command, input or the core's timer.
        let deadline = wire.poll_timeout(leaf);
        let waiting = pending.is_some();
        let holding = held.is_some();
        let step = select4(
            async {
                if waiting {
                    poll_fn(|cx| ch.events.poll_ready_to_send(cx)).await
                } else {
                    never().await
                }
            },
            async {
                if waiting || holding {
                    never().await
                } else {
                    ch.commands.receive().await
                }
            },
            async {
                if waiting || leaf.is_closed() {
                    never().await
                } else {
                    socket
                        .read_with(|buf| {
                            let used = wire.input(leaf, buf);
                            (used, used)
                        })
                        .await
                }
            },
            async {
                match deadline {
                    Some(t) => Timer::at(to_embassy_instant(t)).await,
                    None => never().await,
                }
            },
        )
        .await;

        match step {
            Either4::First(()) => {
                if let Some(ev) = pending.take() {
                    let down = match ev {
                        LeafEvent::Down(Down::Link(reason)) => {
                            debug!("dmsg: link closed: {:?}", reason);
                            Some(reason.is_clean())
                        }
                        LeafEvent::Suspended { reason } if L::SESSION => {
                            debug!("dmsg: transport lost, session suspended: {:?}", reason);
                            Some(false)
                        }
                        _ => None,
                    };
                    // Room was there a moment ago and the runner is the only sender.
                    if let Err(embassy_sync::channel::TrySendError::Full(ev)) =
                        ch.events.try_send(ev)
                    {
                        pending = Some(ev);
                    } else if let Some(clean) = down {
                        info!("dmsg: link down");
                        return clean;
                    }
                }
            }
            // Carried out at the top of the loop, after the flush: with room in the output
            // queue at once; when there is none even then (the reliable session's window
            // waits for the hub's acknowledgements) it is held there until it fits.
            Either4::Second(cmd) => held = Some(cmd),
            Either4::Third(Ok(used)) => trace!("dmsg: {} bytes in", used),
            Either4::Third(Err(_)) => {
                info!("dmsg: connection closed by the hub");
                wire.handle_eof();
                #[cfg(feature = "secure")]
                wire.check(leaf, ch).await;
                leaf.handle_close();
            }
            Either4::Fourth(()) => wire.handle_timeout(leaf),
        }
    }
}
