//! A DMSG cluster leaf on a Nucleo-H743ZI (STM32H743, built-in Ethernet MAC + LAN8742 PHY).
//!
//! Brings the network up (DHCP, or the static address below), connects to the hub at `HUB`,
//! advertises a span, echoes DBG_SHELL transactions and one-way messages, and answers a
//! `READ` transaction with a counter-derived value: the uptime in milliseconds (ASCII). (The
//! H743's temperature sensor sits on ADC3, which needs PLL2 clocking and the factory
//! calibration words; not worth the example's clarity.)
//!
//! Without the `dmsg` feature the same firmware is a plain TCP client that writes the value
//! to the hub once a second.
//!
//! With the `secure` feature the link runs encrypted and mutually authenticated (Noise IK,
//! dmsg-core's secure channel): edit `LEAF_SECRET` and `HUB_PUBLIC` in the `leaf` module (the
//! key files of `dmsg keygen`; the hub's keys directory must hold this leaf's public key).
//! The handshakes' randomness comes from the H743's hardware RNG.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::{bind_interrupts, eth, peripherals, rng, Config};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

/// DHCP (true) or the static address below (false).
const USE_DHCP: bool = true;
/// Our address when `USE_DHCP` is false.
const STATIC_ADDRESS: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 51), 24);
/// The gateway when `USE_DHCP` is false.
const STATIC_GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
/// The hub (a DragonFly `hammer2 service` or any DMSG hub), DMSG's port 987.
const HUB: IpEndpoint = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 1, 10)), 987);
/// Locally administered MAC address; give every board its own.
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// TCP socket buffers (the same in both builds, so they cancel out in the size report).
const SOCKET_BUFFER: usize = 4096;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

/// The value a READ answers: milliseconds since boot.
fn reading() -> i64 {
    embassy_time::Instant::now().as_millis() as i64
}

/// `v` in decimal ASCII (no `core::fmt`: it would cost kilobytes of flash).
fn decimal(v: i64, out: &mut heapless::Vec<u8, 20>) {
    let mut digits = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.clear();
    if v < 0 {
        let _ = out.push(b'-');
    }
    let _ = out.extend_from_slice(&digits[i..]);
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut config = Config::default();
    {
        use embassy_stm32::rcc::*;
        config.rcc.hsi = Some(HSIPrescaler::DIV1);
        config.rcc.csi = true;
        config.rcc.hsi48 = Some(Default::default()); // the RNG's clock
        config.rcc.pll1 = Some(Pll {
            source: PllSource::HSI,
            prediv: PllPreDiv::DIV4,
            mul: PllMul::MUL50,
            fracn: None,
            divp: Some(PllDiv::DIV2),
            divq: None,
            divr: None,
        });
        config.rcc.sys = Sysclk::PLL1_P; // 400 MHz
        config.rcc.ahb_pre = AHBPrescaler::DIV2; // 200 MHz
        config.rcc.apb1_pre = APBPrescaler::DIV2;
        config.rcc.apb2_pre = APBPrescaler::DIV2;
        config.rcc.apb3_pre = APBPrescaler::DIV2;
        config.rcc.apb4_pre = APBPrescaler::DIV2;
        config.rcc.voltage_scale = VoltageScale::Scale1;
    }
    let p = embassy_stm32::init(config);
    let mut rng = Rng::new(p.RNG, Irqs);

    // Nucleo-H743ZI RMII: ref_clk PA1, crs PA7, rxd0 PC4, rxd1 PC5, txd0 PG13, txd1 PB13,
    // tx_en PG11; MDIO PA2, MDC PC1.
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        MAC,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );

    let net_config = if USE_DHCP {
        embassy_net::Config::dhcpv4(Default::default())
    } else {
        embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: STATIC_ADDRESS,
            gateway: Some(STATIC_GATEWAY),
            dns_servers: heapless::Vec::new(),
        })
    };
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (stack, net_runner) = embassy_net::new(
        device,
        net_config,
        RESOURCES.init(StackResources::new()),
        rng.next_u64(),
    );
    spawner.spawn(unwrap!(net_task(net_runner)));

    static SOCKET_RX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static SOCKET_TX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    let socket_rx = SOCKET_RX.init([0; SOCKET_BUFFER]);
    let socket_tx = SOCKET_TX.init([0; SOCKET_BUFFER]);

    info!("waiting for the network");
    stack.wait_config_up().await;
    if let Some(cfg) = stack.config_v4() {
        info!("address {}", cfg.address);
    }

    #[cfg(feature = "dmsg")]
    leaf::run(spawner, stack, socket_rx, socket_tx, rng.next_u32(), rng).await;

    #[cfg(not(feature = "dmsg"))]
    plain::run(stack, socket_rx, socket_tx).await;
}

/// The DMSG leaf.
#[cfg(feature = "dmsg")]
mod leaf {
    use super::*;
    use dmsg_core::errcode::txn as errcode;
    use dmsg_core::wire::{Command, Uuid};
    use dmsg_embassy::{Channels, LeafCommand, LeafConfig, LeafEvent};
    use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;

    /// This leaf's X25519 secret key: the 64 hex digits of the `dmsg-x25519-secret` line of
    /// a key file written by `dmsg keygen --name nucleo-h743zi` (never share it; give every
    /// board its own). The hub's keys directory must hold the matching `.pub` file.
    /// **Replace this example value**: anyone who reads this source holds it.
    #[cfg(feature = "secure")]
    const LEAF_SECRET: [u8; 32] = dmsg_embassy::secure::key_from_hex(
        "38c1f0d2e3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d5f",
    );
    /// The hub's X25519 public key: the 64 hex digits of its `dmsg-x25519-pub` key file
    /// (the one `dmsg hub --keys DIR` runs with). **Replace this example value.**
    #[cfg(feature = "secure")]
    const HUB_PUBLIC: dmsg_core::secure::PublicKey =
        dmsg_core::secure::PublicKey(dmsg_embassy::secure::key_from_hex(
            "0d5f2c3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6",
        ));

    /// The application's "read" command (protocol nibble 3 is unassigned by DragonFly): a
    /// transaction whose answer carries the reading as ASCII.
    pub const READ: Command = Command::from_parts(3, 0x001);

    /// Aux bytes a command or event carries; channel depths.
    const AUX: usize = 64;
    type Leaf = dmsg_embassy::Runner<'static, CriticalSectionRawMutex, AUX, 2, 2>;

    /// The leaf's identity and settings: a `static`, in flash.
    static CONFIG: LeafConfig<'static> = LeafConfig {
        pfs_label: "h743-uptime",
        pfs_id: Uuid([0x48, 0x37, 0x34, 0x33, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
        echo: Some(Command::DbgShell),
        ..LeafConfig::new(HUB, "nucleo-h743zi")
    };

    static CHANNELS: Channels<CriticalSectionRawMutex, AUX, 2, 2> = Channels::new();

    /// Takes the runner by reference: an `async fn` argument is stored twice in its future
    /// (once as the argument, once as the moved local), which would double its 6 KiB.
    #[embassy_executor::task]
    async fn dmsg_task(runner: &'static mut Leaf) -> ! {
        runner.run().await
    }

    pub async fn run(
        spawner: Spawner,
        stack: embassy_net::Stack<'static>,
        socket_rx: &'static mut [u8],
        socket_tx: &'static mut [u8],
        seed: u32,
        #[allow(unused_variables)] rng: Rng<'static, peripherals::RNG>,
    ) -> ! {
        static RUNNER: StaticCell<Leaf> = StaticCell::new();
        let runner = unwrap!(Leaf::new(stack, &CONFIG, &CHANNELS, socket_rx, socket_tx, seed).ok());
        // The handshakes' ephemeral keys come from the STM32H7's hardware RNG (a true RNG
        // from analog noise, with the peripheral's own health checks; embassy-stm32 reports
        // its seed and clock errors and recovers).
        #[cfg(feature = "secure")]
        let runner = {
            static RNG: StaticCell<Rng<'static, peripherals::RNG>> = StaticCell::new();
            unwrap!(runner
                .with_secure(dmsg_embassy::SecureLink {
                    local: dmsg_core::secure::Keypair::from_secret(LEAF_SECRET),
                    hub: HUB_PUBLIC,
                    config: dmsg_core::secure::SecureConfig::default(),
                    rng: RNG.init(rng),
                })
                .ok())
        };
        let runner = RUNNER.init(runner);
        spawner.spawn(unwrap!(dmsg_task(runner)));

        loop {
            match CHANNELS.events.receive().await {
                LeafEvent::Request { txn, msg } if msg.command == READ => {
                    let mut text = heapless::Vec::<u8, 20>::new();
                    decimal(reading(), &mut text);
                    let mut aux = heapless::Vec::new();
                    let _ = aux.extend_from_slice(&text);
                    CHANNELS
                        .commands
                        .send(LeafCommand::Send {
                            txn,
                            command: READ,
                            aux,
                            error: 0,
                            delete: true,
                        })
                        .await;
                }
                LeafEvent::Request { txn, .. } => {
                    CHANNELS
                        .commands
                        .send(LeafCommand::Reply {
                            txn,
                            error: errcode::NOSUPP,
                        })
                        .await;
                }
                LeafEvent::Up => info!("dmsg: connected"),
                LeafEvent::SpanAdvertised { .. } => info!("dmsg: span advertised"),
                LeafEvent::Down(_) => info!("dmsg: down"),
                _ => {}
            }
        }
    }
}

/// The plain TCP client of the size baseline: the same network, one line per second.
#[cfg(not(feature = "dmsg"))]
mod plain {
    use super::*;
    use defmt::warn;
    use embassy_net::tcp::TcpSocket;
    use embassy_time::{Duration, Timer};

    pub async fn run(
        stack: embassy_net::Stack<'static>,
        socket_rx: &'static mut [u8],
        socket_tx: &'static mut [u8],
    ) -> ! {
        loop {
            let mut socket = TcpSocket::new(stack, &mut *socket_rx, &mut *socket_tx);
            socket.set_timeout(Some(Duration::from_secs(10)));
            if let Err(e) = socket.connect(HUB).await {
                warn!("connect: {}", e);
                Timer::after_secs(1).await;
                continue;
            }
            loop {
                let mut line = heapless::Vec::<u8, 20>::new();
                decimal(reading(), &mut line);
                if write_all(&mut socket, &line).await.is_err()
                    || write_all(&mut socket, b"\n").await.is_err()
                {
                    warn!("write failed");
                    break;
                }
                Timer::after_secs(1).await;
            }
        }
    }

    async fn write_all(
        socket: &mut TcpSocket<'_>,
        mut data: &[u8],
    ) -> Result<(), embassy_net::tcp::Error> {
        while !data.is_empty() {
            let n = socket.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }
}
