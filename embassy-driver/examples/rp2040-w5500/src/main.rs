//! A DMSG cluster leaf on a WIZnet W5500-EVB-Pico (RP2040 + W5500 over SPI0).
//!
//! Brings the network up (DHCP, or the static address below), connects to the hub at `HUB`,
//! advertises a span, echoes DBG_SHELL transactions and one-way messages, and answers a
//! `READ` transaction with the RP2040's internal temperature in millidegrees Celsius (ASCII).
//!
//! Without the `dmsg` feature the same firmware is a plain TCP client that writes the
//! temperature to the hub once a second: the baseline the size report subtracts.
//!
//! With the `secure` feature the link runs encrypted and mutually authenticated (Noise IK,
//! dmsg-core's secure channel): edit `LEAF_SECRET` and `HUB_PUBLIC` in the `leaf` module (the
//! key files of `dmsg keygen`; the hub's keys directory must hold this leaf's public key).
//! Randomness for the handshakes comes from embassy-rp's `RoscRng`: see the warning there.
#![no_std]
#![no_main]

use defmt::{info, unwrap};
use embassy_executor::Spawner;
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_wiznet::chip::W5500;
use embassy_net_wiznet::{Device, Runner as WiznetRunner, State};
use embassy_rp::adc::{self, Adc};
use embassy_rp::bind_interrupts;
use embassy_rp::clocks::RoscRng;
use embassy_rp::gpio::{Input, Level, Output, Pull};
use embassy_rp::peripherals::{DMA_CH0, DMA_CH1, SPI0};
use embassy_rp::spi::{Async, Config as SpiConfig, Spi};
use embassy_time::Delay;
use embedded_hal_bus::spi::ExclusiveDevice;
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

/// DHCP (true) or the static address below (false).
const USE_DHCP: bool = true;
/// Our address when `USE_DHCP` is false.
const STATIC_ADDRESS: Ipv4Cidr = Ipv4Cidr::new(Ipv4Address::new(192, 168, 1, 50), 24);
/// The gateway when `USE_DHCP` is false.
const STATIC_GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
/// The hub (a DragonFly `hammer2 service` or any DMSG hub), DMSG's port 987.
const HUB: IpEndpoint = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(192, 168, 1, 10)), 987);
/// Locally administered MAC address; give every board its own.
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// TCP socket buffers (the same in both builds, so they cancel out in the size report).
const SOCKET_BUFFER: usize = 4096;

bind_interrupts!(struct Irqs {
    DMA_IRQ_0 => embassy_rp::dma::InterruptHandler<DMA_CH0>, embassy_rp::dma::InterruptHandler<DMA_CH1>;
    ADC_IRQ_FIFO => adc::InterruptHandler;
});

type Spi0Device = ExclusiveDevice<Spi<'static, SPI0, Async>, Output<'static>, Delay>;

#[embassy_executor::task]
async fn ethernet_task(
    runner: WiznetRunner<'static, W5500, Spi0Device, Input<'static>, Output<'static>>,
) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device<'static>>) -> ! {
    runner.run().await
}

/// The RP2040's temperature sensor: 27 °C at 0.706 V, -1.721 mV/K, 12-bit ADC at 3.3 V.
fn millidegrees(raw: u16) -> i32 {
    let microvolts = i64::from(raw) * 3_300_000 / 4096;
    (27_000 - (microvolts - 706_000) * 1_000 / 1_721) as i32
}

/// `v` in decimal ASCII (no `core::fmt`: it would cost kilobytes of flash).
fn decimal(v: i32, out: &mut heapless::Vec<u8, 12>) {
    let mut digits = [0u8; 11];
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
    let p = embassy_rp::init(Default::default());
    let mut rng = RoscRng;

    let mut adc = Adc::new(p.ADC, Irqs, adc::Config::default());
    let mut temp = adc::Channel::new_temp_sensor(p.ADC_TEMP_SENSOR);

    // W5500-EVB-Pico: SPI0 clk 18, mosi 19, miso 16, CS 17, INT 21, RST 20.
    let mut spi_cfg = SpiConfig::default();
    spi_cfg.frequency = 50_000_000;
    let spi = Spi::new(
        p.SPI0, p.PIN_18, p.PIN_19, p.PIN_16, p.DMA_CH0, p.DMA_CH1, Irqs, spi_cfg,
    );
    let cs = Output::new(p.PIN_17, Level::High);
    let w5500_int = Input::new(p.PIN_21, Pull::Up);
    let w5500_reset = Output::new(p.PIN_20, Level::High);

    static WIZNET: StaticCell<State<8, 8>> = StaticCell::new();
    let (device, runner) = unwrap!(embassy_net_wiznet::new(
        MAC,
        WIZNET.init(State::new()),
        unwrap!(ExclusiveDevice::new(spi, cs, Delay)),
        w5500_int,
        w5500_reset,
    )
    .await
    .ok());
    spawner.spawn(unwrap!(ethernet_task(runner)));

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
    leaf::run(
        spawner,
        stack,
        socket_rx,
        socket_tx,
        rng.next_u32(),
        &mut adc,
        &mut temp,
    )
    .await;

    #[cfg(not(feature = "dmsg"))]
    plain::run(stack, socket_rx, socket_tx, &mut adc, &mut temp).await;
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
    /// a key file written by `dmsg keygen leaf-07` (never share it; give every board its
    /// own). The hub's keys directory must hold the matching `leaf-07.pub`.
    /// **Replace this example value**: anyone who reads this source holds it.
    #[cfg(feature = "secure")]
    const LEAF_SECRET: [u8; 32] = dmsg_embassy::secure::key_from_hex(
        "a8c0f1d2e3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d5e",
    );
    /// The hub's X25519 public key: the 64 hex digits of its `dmsg-x25519-pub` key file
    /// (the one `dmsg hub --keys DIR` runs with). **Replace this example value.**
    #[cfg(feature = "secure")]
    const HUB_PUBLIC: dmsg_core::secure::PublicKey =
        dmsg_core::secure::PublicKey(dmsg_embassy::secure::key_from_hex(
            "0d5f2c3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6",
        ));

    /// The application's "read" command (protocol nibble 3 is unassigned by DragonFly): a
    /// transaction whose answer carries the temperature in millidegrees Celsius, as ASCII.
    pub const READ: Command = Command::from_parts(3, 0x001);

    /// Aux bytes a command or event carries; channel depths.
    const AUX: usize = 64;
    type Leaf = dmsg_embassy::Runner<'static, CriticalSectionRawMutex, AUX, 2, 2>;

    /// The leaf's identity and settings: a `static`, in flash.
    static CONFIG: LeafConfig<'static> = LeafConfig {
        pfs_label: "rp2040-temp",
        pfs_id: Uuid([
            0x52, 0x50, 0x32, 0x30, 0x34, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
        ]),
        echo: Some(Command::DbgShell),
        ..LeafConfig::new(HUB, "w5500-evb-pico")
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
        adc: &mut Adc<'static, adc::Async>,
        temp: &mut adc::Channel<'static>,
    ) -> ! {
        static RUNNER: StaticCell<Leaf> = StaticCell::new();
        let runner = unwrap!(Leaf::new(stack, &CONFIG, &CHANNELS, socket_rx, socket_tx, seed).ok());
        // The handshakes' ephemeral keys come from the RP2040's ring oscillator (embassy-rp's
        // `RoscRng`: one RANDOMBIT sample per bit, no conditioning). The RP2040 has no true
        // RNG; the datasheet does not claim ROSC sampling is one, its bits are biased and
        // correlated, and they depend on voltage and temperature. An ephemeral key from it is
        // weaker than from a real TRNG; the static keys above come from the host's OS RNG
        // (`dmsg keygen`). On a chip with a TRNG (RP2350, STM32H7's RNG) pass that instead.
        #[cfg(feature = "secure")]
        let runner = {
            static RNG: StaticCell<RoscRng> = StaticCell::new();
            unwrap!(runner
                .with_secure(dmsg_embassy::SecureLink {
                    local: dmsg_core::secure::Keypair::from_secret(LEAF_SECRET),
                    hub: HUB_PUBLIC,
                    config: dmsg_core::secure::SecureConfig::default(),
                    rng: RNG.init(RoscRng),
                })
                .ok())
        };
        let runner = RUNNER.init(runner);
        spawner.spawn(unwrap!(dmsg_task(runner)));

        loop {
            match CHANNELS.events.receive().await {
                LeafEvent::Request { txn, msg } if msg.command == READ => {
                    let raw = adc.read(temp).await.unwrap_or(0);
                    let mut text = heapless::Vec::<u8, 12>::new();
                    decimal(millidegrees(raw), &mut text);
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
        adc: &mut Adc<'static, adc::Async>,
        temp: &mut adc::Channel<'static>,
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
                let raw = adc.read(temp).await.unwrap_or(0);
                let mut line = heapless::Vec::<u8, 12>::new();
                decimal(millidegrees(raw), &mut line);
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
