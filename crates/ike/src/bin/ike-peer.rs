//! A minimal IKEv2 peer around [`m6t_ike::endpoint::Endpoint`], for the strongSwan interop
//! tests (crates/ike/tests/strongswan_ike.rs) and for trying the machine by hand in a namespace: UDP
//! sockets on 500 and 4500, the machine's transmits and timers, and, once a tunnel-mode
//! CHILD_SA is up, userspace ESP-in-UDP (RFC 3948) with the IPsec crate, answering ICMPv6
//! echo requests to the inner address and sending its own.
//!
//! It prints one line per event on stdout (`ike up`, `child up`, `failed`, `ping reply`,
//! `echo answered`, `ike down`); keys are never printed.
//!
//! ```text
//! ike-peer --role responder|initiator --local 192.0.2.2 --remote 192.0.2.1 \
//!   --id mn1@example.org --remote-id ha.example.org --psk-file FILE \
//!   --ike aes128-sha256-modp2048 --esp aes128-sha256 \
//!   --local-ts 2001:db8:1::10/128 --remote-ts 2001:db8:f::1/128 \
//!   [--encap] [--ping 2001:db8:f::1 --count 3 --interval MS] [--seconds 20] [--dpd SECONDS]
//!   [--retransmit-tries N] [--rekey-child SECONDS] [--rekey-ike SECONDS]
//!   [--cert PEM --key PEM] [--ca PEM]   (certificates, RFC 7427, instead of --psk-file)
//! ```

use m6t_ike::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
use m6t_ike::endpoint::{ChildSa, Endpoint, IkeEvent, NAT_T_PORT};
use m6t_ike::suite::{ChildSuite, IkeSuite};
use m6t_ike::{ts, IKE_PORT};
use m6t_ipsec::{Mode, Sa, SaParams};
use m6t_wire::checksum;
use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn arg(args: &HashMap<String, String>, k: &str) -> String {
    args.get(k)
        .cloned()
        .unwrap_or_else(|| fail(&format!("missing --{k}")))
}

fn fail(msg: &str) -> ! {
    eprintln!("ike-peer: {msg}");
    std::process::exit(2)
}

fn selector(s: &str) -> m6t_ike::TrafficSelector {
    let (a, l) = s.split_once('/').unwrap_or((s, "128"));
    let addr: IpAddr = a
        .parse()
        .unwrap_or_else(|_| fail(&format!("bad address {a}")));
    ts::prefix(addr, l.parse().unwrap_or(128)).unwrap_or_else(|| fail(&format!("bad prefix {s}")))
}

/// An ICMPv6 echo (request 128 or reply 129) in an IPv6 packet.
fn echo(kind: u8, src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let upper_len = 8 + data.len();
    let mut p = vec![0u8; 40 + upper_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(upper_len as u16).to_be_bytes());
    p[6] = 58;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40] = kind;
    p[44..46].copy_from_slice(&id.to_be_bytes());
    p[46..48].copy_from_slice(&seq.to_be_bytes());
    p[48..].copy_from_slice(data);
    let sum = checksum::accumulate(
        checksum::pseudo_header(&src, &dst, 58, upper_len as u32),
        &p[40..],
    );
    p[42..44].copy_from_slice(&checksum::finish(sum).to_be_bytes());
    p
}

/// The ESP of the tunnel: every inbound SA still alive (the old one of a rekey stays until
/// deleted, for packets in flight) and the newest outbound one.
struct Esp {
    inbound: HashMap<u32, Sa>,
    outbound: Sa,
    remote: SocketAddr,
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let mut args = HashMap::new();
    let mut i = 0;
    while i < raw.len() {
        let k = raw[i].trim_start_matches("--").to_owned();
        if k == "encap" {
            args.insert(k, String::new());
            i += 1;
        } else {
            let v = raw
                .get(i + 1)
                .cloned()
                .unwrap_or_else(|| fail(&format!("--{k} needs a value")));
            args.insert(k, v);
            i += 2;
        }
    }
    let local_ip: IpAddr = arg(&args, "local")
        .parse()
        .unwrap_or_else(|_| fail("bad --local"));
    let remote_ip: IpAddr = arg(&args, "remote")
        .parse()
        .unwrap_or_else(|_| fail("bad --remote"));
    let psk: Vec<u8> = match args.get("psk-file") {
        Some(f) => {
            let b = std::fs::read(f).unwrap_or_else(|e| fail(&format!("--psk-file: {e}")));
            String::from_utf8_lossy(&b).trim_end().as_bytes().to_vec()
        }
        None => Vec::new(),
    };
    let text = |k: &str| {
        args.get(k)
            .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| fail(&format!("--{k}: {e}"))))
    };
    let local_cert = match (text("cert"), text("key")) {
        (Some(c), Some(k)) => Some(std::sync::Arc::new(
            m6t_ike::cert::Credential::from_pem(&c, &k)
                .unwrap_or_else(|e| fail(&format!("--cert/--key: {e}"))),
        )),
        _ => None,
    };
    let trust = text("ca").map(|c| {
        std::sync::Arc::new(
            m6t_ike::cert::Trust::from_pem(&c).unwrap_or_else(|e| fail(&format!("--ca: {e}"))),
        )
    });
    let esp = ChildSuite::parse(&arg(&args, "esp")).unwrap_or_else(|e| fail(&e));
    let child = ChildConfig {
        name: "c".into(),
        mode: Mode::Tunnel,
        local_ts: vec![selector(&arg(&args, "local-ts"))],
        remote_ts: vec![selector(&arg(&args, "remote-ts"))],
        proposals: vec![esp],
    };
    let inner_local = match child.local_ts[0].range {
        m6t_ike::TsRange::V6(a, _) => a,
        _ => fail("--local-ts must be IPv6"),
    };
    let config = IkeConfig {
        proposals: vec![IkeSuite::parse(&arg(&args, "ike")).unwrap_or_else(|e| fail(&e))],
        peers: vec![PeerConfig {
            name: "peer".into(),
            local_id: Identity::parse(&arg(&args, "id")),
            remote_id: Identity::parse(&arg(&args, "remote-id")),
            psk: psk.into(),
            local_cert,
            trust,
            children: vec![child],
        }],
        force_encap: args.contains_key("encap"),
        retransmit_timeout: Duration::from_secs(1),
        retransmit_tries: args.get("retransmit-tries").map_or(5, |s| {
            s.parse().unwrap_or_else(|_| fail("bad --retransmit-tries"))
        }),
        rekey_child: args
            .get("rekey-child")
            .map(|s| Duration::from_secs(s.parse().unwrap_or_else(|_| fail("bad --rekey-child")))),
        rekey_ike: args
            .get("rekey-ike")
            .map(|s| Duration::from_secs(s.parse().unwrap_or_else(|_| fail("bad --rekey-ike")))),
        dpd: args
            .get("dpd")
            .map(|s| Duration::from_secs(s.parse().unwrap_or_else(|_| fail("bad --dpd")))),
        ..IkeConfig::default()
    };
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed))
        .unwrap_or_else(|e| fail(&format!("/dev/urandom: {e}")));
    let mut ep = Endpoint::new(config, seed);
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    ep.set_unix_time(unix());
    let s500 =
        UdpSocket::bind((local_ip, IKE_PORT)).unwrap_or_else(|e| fail(&format!("bind 500: {e}")));
    let s4500 = UdpSocket::bind((local_ip, NAT_T_PORT))
        .unwrap_or_else(|e| fail(&format!("bind 4500: {e}")));
    for s in [&s500, &s4500] {
        s.set_nonblocking(true).expect("nonblocking");
    }
    let seconds: u64 = args.get("seconds").map_or(20, |s| s.parse().unwrap_or(20));
    let ping: Option<Ipv6Addr> = args
        .get("ping")
        .map(|s| s.parse().unwrap_or_else(|_| fail("bad --ping")));
    let count: u16 = args.get("count").map_or(3, |s| s.parse().unwrap_or(3));
    let interval = Duration::from_millis(
        args.get("interval")
            .map_or(300, |s| s.parse().unwrap_or(300)),
    );
    let start = Instant::now();
    if arg(&args, "role") == "initiator" {
        ep.connect(
            start,
            "peer",
            SocketAddr::new(local_ip, IKE_PORT),
            SocketAddr::new(remote_ip, IKE_PORT),
        )
        .unwrap_or_else(|e| fail(&e.to_string()));
    }
    println!("ready");
    let mut out = std::io::stdout();
    let _ = out.flush();
    let mut esp: Option<Esp> = None;
    let mut sent = 0u16;
    let mut next_ping = start;
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < Duration::from_secs(seconds) {
        let now = Instant::now();
        let mut idle = true;
        for (sock, port) in [(&s500, IKE_PORT), (&s4500, NAT_T_PORT)] {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    idle = false;
                    let local = SocketAddr::new(local_ip, port);
                    let d = &mut buf[..n];
                    ep.set_unix_time(unix());
                    if port == NAT_T_PORT && !Endpoint::is_ike_on_nat_t(d) {
                        if let Some(e) = esp.as_mut() {
                            on_esp(e, d, inner_local, &s4500);
                        }
                    } else {
                        ep.handle(now, local, from, d);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => fail(&format!("recv: {e}")),
            }
        }
        if ep.poll_timeout().is_some_and(|t| t <= now) {
            ep.handle_timeout(now);
        }
        while let Some(t) = ep.poll_transmit() {
            let sock = if t.local.port() == NAT_T_PORT {
                &s4500
            } else {
                &s500
            };
            let _ = sock.send_to(&t.payload, t.remote);
        }
        while let Some(ev) = ep.poll_event() {
            match ev {
                IkeEvent::IkeUp {
                    suite, nat, remote, ..
                } => {
                    println!("ike up suite={} remote={remote} nat={nat:?}", suite.name())
                }
                IkeEvent::ChildUp(c) => {
                    println!(
                        "child {} in={:#010x} out={:#010x} encap={} algorithm={}",
                        if c.rekeys.is_some() { "rekeyed" } else { "up" },
                        c.inbound.spi,
                        c.outbound.spi,
                        c.udp_encap,
                        c.suite.algorithm.name()
                    );
                    let (spi, inbound, outbound, remote) = install(&c);
                    match esp.as_mut() {
                        Some(e) => {
                            e.inbound.insert(spi, inbound);
                            e.outbound = outbound;
                        }
                        None => {
                            esp = Some(Esp {
                                inbound: HashMap::from([(spi, inbound)]),
                                outbound,
                                remote,
                            })
                        }
                    }
                }
                IkeEvent::IkeRekeyed { .. } => println!("ike rekeyed"),
                IkeEvent::Failed { why, detail, .. } => println!("failed {why}: {detail}"),
                IkeEvent::IkeDown { why, .. } => {
                    println!("ike down {why}");
                    // A rekeyed IKE SA's CHILD_SAs live on in its successor.
                    if why != m6t_ike::endpoint::Failure::Rekeyed {
                        esp = None;
                    }
                }
                IkeEvent::ChildDown { inbound_spi, .. } => {
                    println!("child down in={inbound_spi:#010x}");
                    if let Some(e) = esp.as_mut() {
                        e.inbound.remove(&inbound_spi);
                    }
                }
                IkeEvent::PeerMoved { remote, .. } => {
                    println!("peer moved {remote}");
                    if let Some(e) = esp.as_mut() {
                        e.remote = remote;
                    }
                }
            }
        }
        if let (Some(dst), Some(e)) = (ping, esp.as_mut()) {
            if sent < count && now >= next_ping {
                sent += 1;
                next_ping = now + interval;
                let p = echo(128, inner_local, dst, 0x6d36, sent, b"m6t ike interop");
                let mut o = Vec::new();
                if e.outbound.encapsulate_tunnel(&p, &mut o).is_ok() {
                    let _ = s4500.send_to(&o, e.remote);
                }
            }
        }
        let _ = out.flush();
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The inbound SPI and SA, the outbound SA and where ESP-in-UDP goes.
fn install(c: &ChildSa) -> (u32, Sa, Sa, SocketAddr) {
    let params = |spi| SaParams {
        spi,
        mode: Mode::Tunnel,
        algorithm: c.suite.algorithm,
        esn: c.suite.esn,
    };
    (
        c.inbound.spi,
        Sa::new(params(c.inbound.spi), &c.inbound.keymat, 1).expect("inbound SA"),
        Sa::new(params(c.outbound.spi), &c.outbound.keymat, 2).expect("outbound SA"),
        // With UDP encapsulation the IKE SA's remote is the (possibly NAT-mapped) port
        // ESP-in-UDP goes to (RFC 3948 section 2.1); a NAT need not keep 4500.
        if c.udp_encap {
            c.remote
        } else {
            SocketAddr::new(c.remote.ip(), NAT_T_PORT)
        },
    )
}

fn on_esp(e: &mut Esp, d: &mut [u8], me: Ipv6Addr, sock: &UdpSocket) {
    if d.len() < 8 {
        println!("esp drop truncated");
        return;
    }
    let spi = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let Some(sa) = e.inbound.get_mut(&spi) else {
        println!("esp drop no-sa spi={spi:#010x}");
        return;
    };
    let opened = match sa.decapsulate(d) {
        Ok(o) => o,
        Err(err) => {
            println!("esp drop {}", err.name());
            return;
        }
    };
    let inner = &d[opened.payload.clone()];
    if inner.len() < 48 || inner[6] != 58 {
        return;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[8..24]).expect("16"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&inner[24..40]).expect("16"));
    let id = u16::from_be_bytes([inner[44], inner[45]]);
    let seq = u16::from_be_bytes([inner[46], inner[47]]);
    match inner[40] {
        128 if dst == me => {
            let reply = echo(129, me, src, id, seq, &inner[48..]);
            let mut o = Vec::new();
            if e.outbound.encapsulate_tunnel(&reply, &mut o).is_ok() {
                let _ = sock.send_to(&o, e.remote);
                println!("echo answered from={src} seq={seq}");
            }
        }
        129 if dst == me => println!("ping reply from={src} seq={seq}"),
        _ => {}
    }
}
