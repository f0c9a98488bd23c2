//! `m6t lab`: the embedded default scenario, in network namespaces with the real kernel
//! and a real nftables NAT. Also the topology the end-to-end tests build on.
//!
//! ```text
//!  mn ── 192.0.2.0/24 ── nat ══ masquerade ══ 203.0.113.0/24 (bridge in gw) ── gw ── 2001:db8:1::/64 ── ha ── 2001:db8:2::/64 ── cn
//!                                              attacker 203.0.113.66 ──┘      m6t gateway                     home agent           correspondent
//! ```

pub mod dsmip;

use crate::netns::{check_tools, LabError, LabResult, Netns};
use m6t::status::{self, Report};
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Home agent address.
pub const HA: &str = "2001:db8:1::1";
/// The gateway's home-side address.
pub const GW6: &str = "2001:db8:1::2";
/// The correspondent.
pub const CN: &str = "2001:db8:2::10";
/// The correspondent's IPv4 address (for the plain-path baselines).
pub const CN4: &str = "198.51.100.130";
/// The ULA Teredo prefix of the comparison (never 2001::/32: nothing may look public).
pub const TEREDO_PREFIX: &str = "fd00:3544::/32";
/// The gateway's public IPv4 address.
pub const GW4: &str = "203.0.113.1";
/// The NAT's public addresses (the second one is used after a "reboot").
pub const NAT_PUBLIC: [&str; 2] = ["203.0.113.2", "203.0.113.3"];
/// The MN's IPv4 addresses (the second one after a handover).
pub const MN4: [&str; 2] = ["192.0.2.10", "192.0.2.11"];
/// The IPv6 network the MN may move to (behind the NAT's box, routed, no NAT for IPv6).
pub const V6_VISITED: &str = "2001:db8:5::";
/// Its router.
pub const V6_ROUTER: &str = "2001:db8:5::1";
/// The attacker's IPv4 address.
pub const ATTACKER4: &str = "203.0.113.66";
/// ULA /48 of the lab's mobile nodes and the MN's /80 (subnet 1, MN ID 1).
pub const ULA48: &str = "fd00:6d36:7400::/48";
/// The MN's /80.
pub const MN80: &str = "fd00:6d36:7400:1:1::/80";

const ROLES: &[&str] = &["mn", "nat", "gw", "ha", "cn", "atk"];

/// Knobs of the lab topology.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Namespace tag (several labs can coexist with different tags).
    pub tag: String,
    /// Extra TOML lines for the client config.
    pub client_extra: String,
    /// Gateway ports the client tries, in order.
    pub client_ports: Vec<u16>,
    /// Client keep-alive interval, seconds.
    pub keepalive_interval: f64,
    /// Gateway active-state lifetime, seconds (short, so the lab shows garbage collection).
    pub active_lifetime: f64,
    /// Extra TOML lines for the gateway config.
    pub gateway_extra: String,
    /// conntrack UDP timeouts in the NAT (unreplied, stream), seconds.
    pub nat_udp_timeouts: (u32, u32),
    /// Start every daemon with `--pcap <scratch>/<daemon>.pcapng` ([`Lab::pcap_file`]).
    pub pcap: bool,
    /// Flags of the NAT's `snat` rule (`"random"`: every new mapping gets a random port, so
    /// a forgotten mapping comes back on another port, as many home routers do).
    pub snat_flags: String,
}

impl LabOptions {
    /// The lab's defaults: keep-alives every second against a NAT forgetting UDP mappings
    /// after 3 s (unreplied) / 5 s (stream), so the whole report runs in under a minute.
    pub fn new(tag: &str) -> Self {
        LabOptions {
            tag: tag.to_string(),
            client_extra: String::new(),
            client_ports: vec![3544, 4500],
            keepalive_interval: 1.0,
            active_lifetime: 6.0,
            gateway_extra: String::new(),
            nat_udp_timeouts: (3, 5),
            pcap: false,
            snat_flags: String::new(),
        }
    }
}

/// A running lab: namespaces, gateway and client.
pub struct Lab {
    /// Namespaces and processes.
    pub net: Netns,
    bin: PathBuf,
    /// Gateway control socket.
    pub gw_sock: PathBuf,
    /// The m6t binary the daemons run from.
    pub bin_path: PathBuf,
    /// Client control socket.
    pub client_sock: PathBuf,
    /// Daemons started from now on write their captures ([`Lab::pcap_file`]).
    pub pcap: bool,
}

const INJECT_PY: &str = r#"
import socket, sys, os, ipaddress
mode, bind_ip, bind_port, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind_ip, bind_port))
for i in range(count):
    if mode == "garbage":
        p = os.urandom(1 + (i * 37) % 200)
        if i % 3 == 0:
            p = bytes([0x60]) + p
    else:
        src = ipaddress.IPv6Address(sys.argv[7].replace("{i}", format(i + 1, "x"))).packed
        dst6 = ipaddress.IPv6Address(sys.argv[8]).packed
        body = b"m6t-inject-" + str(i).encode()
        p = bytes([0x60, 0, 0, 0]) + len(body).to_bytes(2, "big") + bytes([59, 64]) + src + dst6 + body
    s.sendto(p, (dst, port))
"#;

pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> LabResult<Option<T>>,
) -> LabResult<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t0.elapsed() > timeout {
            return Err(LabError(format!(
                "timed out after {timeout:?} waiting for {what}"
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Result of a ping run.
#[derive(Debug, Clone, Copy)]
pub struct Ping {
    /// Replies received.
    pub received: u32,
    /// Average round-trip time, ms.
    pub avg_ms: f64,
}

impl Lab {
    /// Builds the topology, starts the gateway and the client, and waits for the tunnel.
    pub fn start(bin: &Path, o: &LabOptions) -> LabResult<Lab> {
        let mut lab = Self::build(bin, o)?;
        lab.start_daemons(o)?;
        Ok(lab)
    }

    /// Builds the topology only (no daemon started).
    pub fn build(bin: &Path, o: &LabOptions) -> LabResult<Lab> {
        check_tools()?;
        let net = Netns::new(&o.tag, ROLES)?;
        let gw_sock = net.dir.join("gw.sock");
        let client_sock = net.dir.join("client.sock");
        let mut lab = Lab {
            net,
            bin_path: bin.to_owned(),
            bin: bin.to_owned(),
            gw_sock,
            client_sock,
            pcap: o.pcap,
        };
        lab.wire(o)?;
        Ok(lab)
    }

    /// Where the daemon `name` (`gateway`, `client`, `ha`, `mn`) writes its `--pcap`.
    pub fn pcap_file(&self, name: &str) -> PathBuf {
        self.net.dir.join(format!("{name}.pcapng"))
    }

    /// Starts the daemon `name` in `role` with `args`, and `--pcap` when [`Lab::pcap`] says so.
    pub(crate) fn spawn_daemon(&mut self, role: &str, name: &str, args: &[&str]) -> LabResult<()> {
        let pcap = self.pcap_file(name).display().to_string();
        let mut all = args.to_vec();
        if self.pcap {
            all.extend_from_slice(&["--pcap", &pcap]);
        }
        self.net.spawn(role, name, &all)
    }

    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> LabResult<()> {
        // Created under a temporary name unique in `a`, then moved and renamed in `b`.
        let tmp: String = format!("x{b}{b_if}").chars().take(15).collect();
        let nb = self.net.ns(b);
        self.net.sh(
            a,
            &format!("ip link add {a_if} type veth peer name {tmp} && ip link set {tmp} netns {nb} && ip link set {a_if} up"),
        )?;
        self.net.sh(
            b,
            &format!("ip link set {tmp} name {b_if} && ip link set {b_if} up"),
        )?;
        Ok(())
    }

    fn wire(&mut self, o: &LabOptions) -> LabResult<()> {
        let n = &self.net;
        for r in ROLES {
            n.sh(r, "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0")?;
        }
        // MN's LAN behind the NAT.
        self.veth("mn", "eth0", "nat", "in0")?;
        // The public side: a bridge in gw joins the NAT, the attacker and the gateway.
        n.sh("gw", "ip link add br0 type bridge && ip link set br0 up")?;
        self.veth("nat", "out0", "gw", "natp")?;
        self.veth("atk", "eth0", "gw", "atkp")?;
        n.sh(
            "gw",
            "ip link set natp master br0 && ip link set atkp master br0",
        )?;
        // Home side.
        self.veth("gw", "home0", "ha", "eth0")?;
        self.veth("ha", "eth1", "cn", "eth0")?;

        n.sh("mn", &format!(
            "sysctl -qw net.ipv4.conf.all.promote_secondaries=1 net.ipv4.conf.eth0.promote_secondaries=1 && \
             ip addr add {}/24 dev eth0 && ip route add default via 192.0.2.1", MN4[0]))?;
        n.sh("nat", &format!(
            "sysctl -qw net.ipv4.ip_forward=1 && ip addr add 192.0.2.1/24 dev in0 && \
             ip addr add {}/24 dev out0 && ip addr add {}/24 dev out0 && ip route add default via {GW4} && \
             sysctl -qw net.ipv6.conf.all.forwarding=1 && ip addr add {V6_ROUTER}/64 dev in0 nodad && \
             ip addr add 2001:db8:4::2/64 dev out0 nodad && ip -6 route add default via 2001:db8:4::1",
            NAT_PUBLIC[0], NAT_PUBLIC[1]))?;
        n.sh(
            "nat",
            &format!(
                "nft add table ip nat && \
             nft add chain ip nat post '{{ type nat hook postrouting priority 100; }}' && \
             nft add rule ip nat post oifname out0 snat to {} {}",
                NAT_PUBLIC[0], o.snat_flags
            ),
        )?;
        n.sh("nat", &format!(
            "sysctl -qw net.netfilter.nf_conntrack_udp_timeout={} net.netfilter.nf_conntrack_udp_timeout_stream={}",
            o.nat_udp_timeouts.0, o.nat_udp_timeouts.1))?;
        n.sh("atk", &format!("ip addr add {ATTACKER4}/24 dev eth0"))?;
        n.sh(
            "gw",
            &format!(
                "ip addr add {GW4}/24 dev br0 && sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip addr add 2001:db8:4::1/64 dev br0 nodad && ip -6 route add {V6_VISITED}/64 via 2001:db8:4::2 && \
             ip route add 192.0.2.0/24 via {} && \
             ip addr add {GW6}/64 dev home0 nodad && ip -6 route add 2001:db8::/32 via {HA} && \
             sysctl -qw net.ipv4.ip_forward=1 && ip addr add 198.51.100.1/25 dev home0 && \
             ip route add 198.51.100.128/25 via 198.51.100.2",
                NAT_PUBLIC[0]
            ),
        )?;
        n.sh(
            "ha",
            &format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 && ip addr add {HA}/64 dev eth0 nodad && \
             ip addr add 2001:db8:2::1/64 dev eth1 nodad && ip -6 route add {ULA48} via {GW6} && \
             ip -6 route add 2001:db8:4::/47 via {GW6} && \
             ip -6 route add {TEREDO_PREFIX} via {GW6} && \
             sysctl -qw net.ipv4.ip_forward=1 && ip addr add 198.51.100.2/25 dev eth0 && \
             ip addr add 198.51.100.129/25 dev eth1 && ip route add default via 198.51.100.1"),
        )?;
        n.sh(
            "cn",
            &format!(
                "ip addr add {CN}/64 dev eth0 nodad && ip -6 route add default via 2001:db8:2::1 && \
                 ip addr add {CN4}/25 dev eth0 && ip route add default via 198.51.100.129"
            ),
        )?;
        Ok(())
    }

    fn start_daemons(&mut self, o: &LabOptions) -> LabResult<()> {
        let d = self.net.dir.clone();
        let hook = self.net.write(
            "hook.sh",
            &format!("#!/bin/sh\necho \"$STATE $REASON $IFACE old=$OLD_ADDRESS new=$ADDRESS\" >> {}/hook.log\n", d.display()),
        )?;
        std::process::Command::new("chmod")
            .args(["+x", &hook.display().to_string()])
            .status()
            .map_err(|e| LabError(e.to_string()))?;
        let gw = self.net.write(
            "gateway.toml",
            &format!(
                "listen = \"{GW4}\"\nports = [3544, 4500]\naddress = \"{GW6}\"\nha_addresses = [\"{HA}\"]\n\
                 mn_prefixes = [\"{ULA48}\"]\nallowed_destinations = [\"2001:db8:2::/64\"]\n\
                 active_lifetime = {:?}\ncontrol_socket = \"{}\"\n{}",
                o.active_lifetime,
                self.gw_sock.display(),
                o.gateway_extra
            ),
        )?;
        let cl = self.net.write(
            "client.toml",
            &format!(
                "gateway = \"{GW4}\"\nports = {:?}\nula = \"{ULA48}\"\nsubnet_id = 1\nmn_id = 1\n\
                 keepalive_interval = {:?}\necho_timeout = 0.3\ndead_probes = 3\n\
                 hook = \"{}\"\ncontrol_socket = \"{}\"\nclaims_dir = \"{}\"\n{}",
                o.client_ports,
                o.keepalive_interval,
                hook.display(),
                self.client_sock.display(),
                d.join("claims").display(),
                o.client_extra
            ),
        )?;
        let bin = self.bin.display().to_string();
        self.spawn_daemon(
            "gw",
            "gateway",
            &[&bin, "gateway", "--config", &gw.display().to_string()],
        )?;
        wait_for(
            "the gateway's control socket",
            Duration::from_secs(10),
            || Ok(self.gw_sock.exists().then_some(())),
        )
        .map_err(|e| LabError(format!("{e}\n{}", self.net.log("gateway"))))?;
        self.spawn_daemon(
            "mn",
            "client",
            &[&bin, "client", "--config", &cl.display().to_string()],
        )?;
        self.wait_client_address(None)
            .map_err(|e| LabError(format!("{e}\n{}", self.net.log("client"))))?;
        Ok(())
    }

    /// Asks a daemon for its report.
    pub fn report(&self, sock: &Path) -> LabResult<Report> {
        // The socket file appears at bind(2), a moment before listen(2): a daemon that is
        // starting may refuse the first connections.
        let mut tries = 0;
        let s = loop {
            match m6t_linux::control::request(sock, status::REQUEST_STATUS) {
                Ok(s) => break s,
                Err(e) if tries < 50 && e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(LabError(format!("status {}: {e}", sock.display()))),
            }
        };
        serde_json::from_str(&s)
            .map_err(|e| LabError(format!("status {}: {e}: {s}", sock.display())))
    }

    /// The gateway's report.
    pub fn gateway(&self) -> LabResult<Report> {
        self.report(&self.gw_sock)
    }

    /// The client's current tunnel address and whether the gateway answered on it.
    pub fn client_address(&self) -> LabResult<(Option<Ipv6Addr>, bool)> {
        match self.report(&self.client_sock)? {
            Report::Client { tunnel, .. } => Ok((tunnel.address, tunnel.confirmed)),
            r => Err(LabError(format!("not a client: {r:?}"))),
        }
    }

    /// Waits until the client has an address other than `not` and it is on the TUN.
    pub fn wait_client_address(&self, not: Option<Ipv6Addr>) -> LabResult<Ipv6Addr> {
        wait_for(
            "the client's tunnel address",
            Duration::from_secs(20),
            || {
                if !self.client_sock.exists() {
                    return Ok(None);
                }
                let (a, _) = self.client_address()?;
                match a {
                    Some(a) if Some(a) != not => {
                        let shown = self.net.sh("mn", "ip -6 addr show dev m6t0")?;
                        Ok(shown.contains(&a.to_string()).then_some(a))
                    }
                    _ => Ok(None),
                }
            },
        )
    }

    /// Pings `dst` from a role: `count` packets of `size` bytes, 0.2 s apart.
    pub fn ping(&self, role: &str, dst: &str, count: u32, size: u32) -> LabResult<Ping> {
        let o = self.net.sh_output(
            role,
            &format!("ping -n -c {count} -i 0.2 -W 2 -s {size} -M do {dst}"),
        )?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let received = out
            .lines()
            .find(|l| l.contains("received"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let avg_ms = out
            .lines()
            .find(|l| l.starts_with("rtt"))
            .and_then(|l| l.split(" = ").nth(1))
            .and_then(|v| v.split('/').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        Ok(Ping { received, avg_ms })
    }

    /// Raw ping output (to look for "Packet too big" and the like).
    pub fn ping_raw(&self, role: &str, args: &str) -> LabResult<String> {
        let o = self.net.sh_output(role, &format!("ping -n {args}"))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    }

    /// Runs iperf3 for `secs` from the MN to `dst`; returns Gbit/s received.
    pub fn tcp_transfer(
        &mut self,
        server_role: &str,
        dst: &str,
        secs: u32,
        reverse: bool,
    ) -> LabResult<f64> {
        self.tcp_transfer_from(server_role, None, dst, secs, reverse)
    }

    /// As [`Self::tcp_transfer`], from the MN's address `src` when given (a home address).
    pub fn tcp_transfer_from(
        &mut self,
        server_role: &str,
        src: Option<&str>,
        dst: &str,
        secs: u32,
        reverse: bool,
    ) -> LabResult<f64> {
        self.net.spawn(
            server_role,
            "iperf3-server",
            &["iperf3", "-s", "-1", "-B", dst],
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let r = if reverse { "-R" } else { "" };
        let b = src.map(|s| format!("-B {s}")).unwrap_or_default();
        let out = self
            .net
            .sh("mn", &format!("iperf3 -c {dst} {b} -t {secs} -J {r}"));
        self.net.stop("iperf3-server");
        let v: serde_json::Value =
            serde_json::from_str(&out?).map_err(|e| LabError(format!("iperf3 output: {e}")))?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .map(|b| b / 1e9)
            .ok_or_else(|| LabError("iperf3 gave no throughput".into()))
    }

    /// Moves the MN to its other IPv4 address and measures the time from the change to
    /// the first ping answered through the new path.
    pub fn handover(&self, to: &str, from: &str) -> LabResult<Duration> {
        let out = self.net.sh(
            "mn",
            &format!(
                "ip addr add {to}/24 dev eth0 && t0=$(date +%s%N) && ip addr del {from}/24 dev eth0 && \
                 i=0; until ping -n -c 1 -W 0.05 {HA} >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 400 ] && exit 1; done; \
                 t1=$(date +%s%N); echo $((t1 - t0))"
            ),
        )?;
        let ns: u64 = out
            .trim()
            .parse()
            .map_err(|_| LabError(format!("handover timing: {out}")))?;
        Ok(Duration::from_nanos(ns))
    }

    /// "Reboots" the NAT: forgets every mapping and comes back with another public address.
    pub fn nat_reboot(&self, new_public: &str) -> LabResult<()> {
        self.net.sh(
            "nat",
            &format!(
                "nft flush chain ip nat post && nft add rule ip nat post oifname out0 snat to {new_public} && \
                 conntrack -F 2>/dev/null; true"
            ),
        )?;
        Ok(())
    }

    /// Measures the time from now until a ping from the MN to the HA is answered again.
    pub fn time_to_recover(&self) -> LabResult<Duration> {
        let out = self.net.sh(
            "mn",
            &format!(
                "t0=$(date +%s%N); i=0; until ping -n -c 1 -W 0.1 {HA} >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 300 ] && exit 1; done; \
                 t1=$(date +%s%N); echo $((t1 - t0))"
            ),
        )?;
        let ns: u64 = out
            .trim()
            .parse()
            .map_err(|_| LabError(format!("recovery timing: {out}")))?;
        Ok(Duration::from_nanos(ns))
    }

    /// Sends crafted UDP datagrams to the gateway from a role: `mode` is `ipv6` (IPv6
    /// packets from `src6` — `{i}` replaced by a counter — to `dst6`) or `garbage`.
    #[allow(clippy::too_many_arguments)]
    pub fn inject(
        &self,
        role: &str,
        bind: &str,
        bind_port: u16,
        port: u16,
        count: u32,
        mode: &str,
        src6: &str,
        dst6: &str,
    ) -> LabResult<()> {
        let py = self.net.write("inject.py", INJECT_PY)?;
        self.net.sh(
            role,
            &format!(
                "/usr/bin/python3 {} {mode} {bind} {bind_port} {GW4} {port} {count} {src6} {dst6}",
                py.display()
            ),
        )?;
        Ok(())
    }

    /// The NAT's conntrack entries for UDP toward the gateway.
    pub fn nat_mappings(&self) -> LabResult<String> {
        let o = self
            .net
            .sh_output("nat", &format!("conntrack -L -p udp -d {GW4} 2>/dev/null"))?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Builds the lab, starts both halves (the m6t client and gateway; the DSMIPv6 home agent
/// and mobile node with IPsec, as the scenario runs them), checks each answers a ping,
/// prints how to reach every host, and waits for Ctrl-C (SIGINT or SIGTERM); dropping the
/// lab then removes every namespace and process.
pub fn hold(bin: &Path, stop: &std::sync::atomic::AtomicBool) -> LabResult<()> {
    let t = Instant::now();
    let mut lab = Lab::start(bin, &LabOptions::new("m6tlab"))?;
    let a = lab.wait_client_address(None)?;
    lab.start_dsmip(&dsmip::DsmipOptions {
        ipsec: Some(dsmip::LabIpsec::random_with_payload()?),
        ..dsmip::DsmipOptions::default()
    })?;
    let m = lab.wait_registered("udp", "192.0.2.", 0)?;
    let hoa4 = m.ipv4_home_address.clone().unwrap_or_default();
    // Each half answers: the m6t tunnel address and the DSMIPv6 home address as sources.
    let m6t_ping = lab.ping_from("mn", &a.to_string(), CN, 1)?;
    let dsmip_ping = lab.ping_from("mn", dsmip::HOA, CN, 1)?;
    if m6t_ping == 0 || dsmip_ping == 0 {
        return Err(LabError(format!(
            "no answer through the {} tunnel",
            if m6t_ping == 0 { "m6t" } else { "DSMIPv6" }
        )));
    }
    print!("{}", hold_text(&lab, a, &hoa4, t.elapsed()));
    use std::io::Write;
    let _ = std::io::stdout().flush();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(lab);
    println!("namespaces and processes removed.");
    Ok(())
}

/// What `m6t lab --hold` prints once both halves run: each host, its addresses and
/// daemons, and commands to try.
fn hold_text(lab: &Lab, tunnel: Ipv6Addr, hoa4: &str, up: Duration) -> String {
    let d = lab.net.dir.display();
    let ns = |r: &str| lab.net.ns(r);
    let (mn, nat, gw, ha, cn, atk) = (ns("mn"), ns("nat"), ns("gw"), ns("ha"), ns("cn"), ns("atk"));
    let (hoa, ha4) = (dsmip::HOA, dsmip::HA4);
    let (mn4, nat4) = (MN4[0], NAT_PUBLIC[0]);
    format!(
        "lab up in {up}: m6t (client and gateway) and DSMIPv6 (mobile node and home agent, \
         IPsec with manual keys) both running; each answered a ping.

hosts (network namespaces; run a command in one with `ip netns exec NAMESPACE COMMAND`):
  {mn:<12} mobile node: eth0 {mn4}/24 behind the NAT;
               m6t client on m6t0, tunnel address {tunnel} (prefix {MN80});
               DSMIPv6 mobile node on mip6mn0, home addresses {hoa} and {hoa4}
  {nat:<12} nftables NAT: 192.0.2.1 inside, {nat4} outside (conntrack -L shows the mappings)
  {gw:<12} m6t gateway on {GW4} UDP 3544 and 4500 (bridge br0), home side {GW6} (m6tgw0)
  {ha:<12} DSMIPv6 home agent {HA} and {ha4} (UDP 4191, ESP in UDP 4500; mip6ha0)
  {cn:<12} correspondent {CN} and {CN4}
  {atk:<12} attacker {ATTACKER4} on the gateway's public bridge

try:
  ip netns exec {mn} ping -I {tunnel} {CN}   # through m6t
  ip netns exec {mn} ping -I {hoa} {CN}   # through DSMIPv6 (ESP)
  ip netns exec {mn} ping -I {hoa4} {CN4}   # DSMIPv6, IPv4 home address
  ip netns exec {gw} tshark -i br0 -d udp.port==3544,ipv6 -d udp.port==4500,ipv6 host {GW4}
  ip netns exec {ha} tshark -i eth0 -d udp.port==4191,ipv6 'udp port 4191 or udp port 4500 or esp'
  m6t status --socket {d}/gw.sock   (also client.sock, ha.sock, mn.sock)

configurations and logs: {d}/{{gateway,client,ha,mn}}.{{toml,log}}
Ctrl-C removes every namespace and process.
",
        up = ms(up),
    )
}

/// Runs the scenario and prints the report. Returns an error at the first failed step.
pub fn run(bin: &Path, stop: &std::sync::atomic::AtomicBool) -> LabResult<()> {
    let check = || {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            Err(LabError("interrupted".into()))
        } else {
            Ok(())
        }
    };
    println!("m6t lab: MN behind an nftables NAT -> m6t gateway -> home agent -> correspondent");
    let t = Instant::now();
    let mut lab = Lab::start(bin, &LabOptions::new("m6tlab"))?;
    let a1 = lab.wait_client_address(None)?;
    println!("  topology and daemons up in {}", ms(t.elapsed()));
    println!("  tunnel address           {a1}   (prefix {MN80})");
    check()?;

    let p = lab.ping("mn", HA, 5, 56)?;
    println!(
        "  ping HA through tunnel   {}/5 replies, avg rtt {:.3} ms",
        p.received, p.avg_ms
    );
    if p.received == 0 {
        return Err(LabError("no ping reply through the tunnel".into()));
    }
    let big = lab.ping("mn", HA, 2, 1424)?;
    println!("  1472-byte IPv6 packets   {}/2 replies", big.received);
    let ptb = lab.ping_raw("ha", &format!("-c 1 -W 1 -s 1425 -M do {a1}"))?;
    let ptb_ok = ptb.contains("mtu=1472") || ptb.contains("mtu = 1472");
    println!(
        "  1473 bytes toward MN     {}",
        if ptb_ok {
            "answered with Packet Too Big, mtu=1472"
        } else {
            "NO Packet Too Big seen"
        }
    );
    if let Report::Gateway { states, .. } = lab.gateway()? {
        for s in &states {
            println!(
                "  gateway state            {} <- {} ({:?})",
                s.address, s.peer, s.kind
            );
        }
    }
    check()?;

    let up = lab.tcp_transfer("cn", CN, 3, false)?;
    let down = lab.tcp_transfer("cn", CN, 3, true)?;
    println!("  TCP MN -> CN (iperf3 3s) {up:.2} Gbit/s;  CN -> MN {down:.2} Gbit/s");
    check()?;

    let h = lab.handover(MN4[1], MN4[0])?;
    let a2 = lab.wait_client_address(Some(a1))?;
    println!(
        "  handover {} -> {}: first ping answered {} after the change",
        MN4[0],
        MN4[1],
        ms(h)
    );
    println!("  new tunnel address       {a2}");
    let gc = wait_for(
        "the old state to be garbage collected",
        Duration::from_secs(30),
        || {
            if let Report::Gateway { states, .. } = lab.gateway()? {
                let old = states.iter().any(|s| s.address == a1);
                let new = states.iter().any(|s| s.address == a2);
                return Ok((!old && new).then_some(()));
            }
            Ok(None)
        },
    );
    println!(
        "  old state on the gateway {}",
        if gc.is_ok() {
            "garbage collected, new state active"
        } else {
            "STILL THERE"
        }
    );
    check()?;

    println!("  idle 8 s, longer than the NAT's 5 s UDP timeout, keep-alives every 1 s ...");
    let before = lab.nat_mappings()?;
    std::thread::sleep(Duration::from_secs(8));
    let after = lab.nat_mappings()?;
    let inbound = lab.ping("ha", &a2.to_string(), 3, 56)?;
    println!(
        "  NAT mapping kept          {} ; HA -> MN ping after idle: {}/3",
        if !after.is_empty() && before.lines().count() > 0 {
            "yes"
        } else {
            "NO"
        },
        inbound.received
    );
    if let Report::Gateway { counters, .. } = lab.gateway()? {
        let ka = counters
            .iter()
            .find(|c| c.name == "keepalives_answered")
            .map(|c| c.value)
            .unwrap_or(0);
        println!("  keep-alives answered      {ka}");
    }
    check()?;

    lab.nat_reboot(NAT_PUBLIC[1])?;
    let r = lab.time_to_recover()?;
    let a3 = lab.wait_client_address(Some(a2))?;
    println!(
        "  NAT reboot (new public address {}): recovered by itself in {} with {a3}",
        NAT_PUBLIC[1],
        ms(r)
    );
    let g = lab.gateway()?;
    println!("\ngateway status:\n{}", status::render(&g));
    explain_drops(
        &g,
        &[
            (
                "drop_address_mismatch",
                "packets from an old tunnel address through the new NAT mapping after the \
                 handover and the NAT reboot: the gateway never moves a state for them",
            ),
            (
                "drop_keepalive_mismatch",
                "keep-alives of an old tunnel address through a new mapping, the same way",
            ),
            (
                "drop_no_state_for_home",
                "packets from the home side to tunnel addresses whose state was collected",
            ),
        ],
    );
    let hooks = std::fs::read_to_string(lab.net.dir.join("hook.log")).unwrap_or_default();
    println!("hook calls:\n{hooks}");
    let m6t_ok = p.received > 0 && big.received > 0 && ptb_ok && gc.is_ok() && inbound.received > 0;
    drop(lab);
    check()?;
    let mut lab6 = Lab::build(bin, &LabOptions::new("m6tlab"))?;
    let dsmip_ok = dsmip::run(&mut lab6)?;
    drop(lab6);
    check()?;
    let mut lab_mr = Lab::build(bin, &LabOptions::new("m6tlab"))?;
    let router_ok = dsmip::run_router(&mut lab_mr)?;
    drop(lab_mr);
    let ok = m6t_ok && dsmip_ok && router_ok;
    println!(
        "lab {} in {:.1} s; namespaces and processes removed.",
        if ok { "passed" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if ok {
        Ok(())
    } else {
        Err(LabError("some lab checks failed (see above)".into()))
    }
}

/// After a status table: why a passing run has these nonzero drop counters (each a
/// consequence of the scenario's moves, not a fault).
pub fn explain_drops(r: &status::Report, why: &[(&str, &str)]) {
    let lines: Vec<String> = why
        .iter()
        .filter(|(name, _)| r.counter(name) > 0)
        .map(|(name, text)| format!("  {name} ({}): {text}", r.counter(name)))
        .collect();
    if !lines.is_empty() {
        println!("drops a passing run has, and why:\n{}", lines.join("\n"));
    }
}
