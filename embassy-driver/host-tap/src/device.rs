//! An embassy-net driver on a Linux TAP device that survives the interface going down.
//!
//! `embassy_net_tuntap::TunTapDevice` panics on any write error, and the kernel answers every
//! write with `EIO` while the TAP interface is down (`ip link set tapX down`): one link flap
//! kills the whole leaf. [`TapDevice`] opens the device with `embassy_net_tuntap::TunTap`
//! (the `TUNSETIFF` part), then drives a duplicate of its file descriptor with `async-io`
//! like that crate does, except that a frame it cannot write is dropped and counted: to
//! the stack above, a downed interface looks like an unplugged cable (frames vanish, TCP
//! retransmits), which is what a microcontroller's Ethernet sees too.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Context;

use async_io::Async;
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};

/// Ethernet header bytes, which smoltcp counts in the MTU (the kernel's MTU is the IP MTU).
const ETHERNET_HEADER_LEN: usize = 14;

/// The IP MTU used when the interface's cannot be read from sysfs.
const DEFAULT_IP_MTU: usize = 1500;

/// Frame counters of a [`TapDevice`], shared with whoever holds a [`TapDevice::stats`]
/// handle (the device itself moves into the network stack).
#[derive(Debug, Default)]
pub struct TapStats {
    /// Frames read from the device.
    pub rx_frames: AtomicU64,
    /// Read errors other than "would block".
    pub rx_errors: AtomicU64,
    /// Frames written to the device.
    pub tx_frames: AtomicU64,
    /// Frames dropped because the write failed (`EIO` while the interface is down, or a
    /// full queue).
    pub tx_dropped: AtomicU64,
}

impl TapStats {
    /// The counters' current values: `(rx_frames, rx_errors, tx_frames, tx_dropped)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.rx_frames.load(Ordering::Relaxed),
            self.rx_errors.load(Ordering::Relaxed),
            self.tx_frames.load(Ordering::Relaxed),
            self.tx_dropped.load(Ordering::Relaxed),
        )
    }
}

/// A TAP device as an embassy-net [`Driver`] (Ethernet medium).
#[derive(Debug)]
pub struct TapDevice {
    io: Async<File>,
    mtu: usize,
    mac: [u8; 6],
    stats: Arc<TapStats>,
}

impl TapDevice {
    /// Attaches to the TAP interface `name` (created if absent, in the calling thread's
    /// network namespace) with the Ethernet address `mac`. `mac` must be a unicast address
    /// (lowest bit of the first byte clear); a locally administered one (`0x02` first) is
    /// the usual choice.
    ///
    /// Errors: opening `/dev/net/tun` or `TUNSETIFF` failed (no permission, a TUN device of
    /// that name exists, ...), or `mac` is a multicast address (`InvalidInput`).
    pub fn open(name: &str, mac: [u8; 6]) -> io::Result<TapDevice> {
        if mac[0] & 1 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the TAP device's MAC address must be unicast",
            ));
        }
        let tap = embassy_net_tuntap::TunTap::new(name)?;
        // A duplicate of the fd (same open file, same attachment, O_NONBLOCK set by
        // `TunTap::new`) as a `File`, whose `&File` reads and writes without unsafe code.
        let file = File::from(tap.as_fd().try_clone_to_owned()?);
        drop(tap);
        let ip_mtu = std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_IP_MTU);
        Ok(TapDevice {
            io: Async::new(file)?,
            mtu: ip_mtu + ETHERNET_HEADER_LEN,
            mac,
            stats: Arc::new(TapStats::default()),
        })
    }

    /// A handle on the device's counters.
    pub fn stats(&self) -> Arc<TapStats> {
        Arc::clone(&self.stats)
    }

    /// The largest frame, Ethernet header included.
    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

impl Driver for TapDevice {
    type RxToken<'a>
        = RxToken
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken, TxToken<'_>)> {
        let mut buf = vec![0; self.mtu];
        loop {
            match self.io.get_ref().read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    self.stats.rx_frames.fetch_add(1, Ordering::Relaxed);
                    return Some((
                        RxToken { buffer: buf },
                        TxToken {
                            io: &self.io,
                            stats: &self.stats,
                        },
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.io.poll_readable(cx).is_pending() {
                        return None;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stats.rx_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("tap: read failed: {e}");
                    // Try again on the stack's next poll rather than losing the wake-up.
                    if self.io.poll_readable(cx).is_ready() {
                        cx.waker().wake_by_ref();
                    }
                    return None;
                }
            }
        }
    }

    fn transmit(&mut self, _cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        Some(TxToken {
            io: &self.io,
            stats: &self.stats,
        })
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = self.mtu;
        caps
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        // Like a PHY that does not report the cable: the stack keeps its sockets and
        // retransmits across a flap.
        LinkState::Up
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}

/// A received frame.
#[doc(hidden)]
pub struct RxToken {
    buffer: Vec<u8>,
}

impl embassy_net_driver::RxToken for RxToken {
    fn consume<R, F>(mut self, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        f(&mut self.buffer)
    }
}

/// Room for one frame to send.
#[doc(hidden)]
pub struct TxToken<'a> {
    io: &'a Async<File>,
    stats: &'a TapStats,
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buffer = vec![0; len];
        let result = f(&mut buffer);
        // One write() is one frame on a TAP device. A failed frame is lost on the wire,
        // as on a real link; TCP above retransmits.
        match self.io.get_ref().write(&buffer) {
            Ok(_) => {
                self.stats.tx_frames.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let n = self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    log::info!("tap: frame dropped ({e}); {} so far", n + 1);
                }
            }
        }
        result
    }
}
