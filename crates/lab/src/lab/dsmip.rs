//! The DSMIPv6 scenario of the lab: the same namespaces, a home agent (`m6t ha`) in `ha`
//! whose home link is the link to `gw` (2001:db8:1::/64, 198.51.100.0/25), and a mobile
//! node (`m6t mn`) in `mn`, first in the IPv4-only network behind the NAT, then moving to
//! another IPv4 address, to the IPv6 network 2001:db8:5::/64 and back.

use super::{wait_for, Lab, CN, CN4, GW6, HA, MN4, V6_ROUTER};
use crate::netns::{LabError, LabResult};
use m6t::status::{self, MnInfo, Report};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The mobile node's IPv6 home address.
pub const HOA: &str = "2001:db8:1::a";
/// The home agent's IPv4 address.
pub const HA4: &str = "198.51.100.2";
/// The dynamic IPv4 home address pool.
pub const POOL: &str = "198.51.100.16/28";
/// The MN's address in the IPv6 network it moves to.
pub const MN6: &str = "2001:db8:5::10";

/// The mobile node's own address on the home link when it is there (besides its home
/// address, which it moves there itself).
pub const MN_AT_HOME: &str = "2001:db8:1::b0";

/// The IPv6 mobile network behind the mobile router (RFC 3963), routed by the home agent.
pub const MNP6: &str = "2001:db8:77::/48";
/// The IPv4 mobile network behind the mobile router (RFC 5555 section 3.1.1), inside the
/// home link's /25 but routed into the tunnel by the more specific route.
pub const MNP4: &str = "198.51.100.96/27";
/// The host behind the mobile router (no mobility software), IPv6.
pub const HOST6: &str = "2001:db8:77:1::10";
/// The host behind the mobile router, IPv4.
pub const HOST4: &str = "198.51.100.100";

/// The SPI of SA1 (mobile node -> home agent, RFC 4877 section 6.1's `spi_a`).
pub const SPI_A: u32 = 0x1001;
/// The SPI of SA2 (home agent -> mobile node, `spi_b`).
pub const SPI_B: u32 = 0x1002;
/// The SPI of SA3, payload in tunnel mode from the mobile node.
pub const SPI_C: u32 = 0x1003;
/// The SPI of SA4, payload in tunnel mode to the mobile node.
pub const SPI_D: u32 = 0x1004;

/// IPsec of the DSMIPv6 scene: the manual SAs of RFC 4877 section 6.1 protecting BU and BA.
#[derive(Clone, PartialEq, Eq)]
pub struct LabIpsec {
    /// Algorithm keyword (`aes128-sha256`, ...).
    pub algorithm: &'static str,
    /// SA1's key material in hex (mobile node -> home agent).
    pub sa1_key: String,
    /// SA2's key material in hex (home agent -> mobile node).
    pub sa2_key: String,
    /// The mobile node's copy of SA1's key is another one (a misconfiguration to show).
    pub mn_wrong_key: bool,
    /// Payload protected too, in tunnel mode (RFC 5555 section 5): SA3 and SA4, with these
    /// keys (hex), selected on the home addresses (the IPv6 one and the IPv4 pool).
    pub payload: Option<(String, String)>,
    /// The mobile node's `bu_detection` (`"spi"`, `"heuristic"`), or its default.
    pub bu_detection: Option<&'static str>,
    /// Keys by IKEv2 (RFC 4877 section 4; `[ike]` with this pre-shared key) instead of the
    /// manual keys above, which are then not written.
    pub ike_psk: Option<String>,
    /// With IKE: the mobile node writes its IKE keys to `mn-ike.keys` beside its file
    /// (`keylog_file`, for tshark).
    pub ike_keylog: bool,
    /// With IKE: the mobile node rekeys a CHILD_SA after this many bytes.
    pub ike_rekey_bytes: Option<u64>,
    /// With IKE: the mobile node's `dpd_seconds` (the lab's 2 by default).
    pub ike_dpd_seconds: u64,
}

/// The mobile node's IKE identity in the lab (RFC 4877 section 4.3's user@FQDN).
pub const MN_ID: &str = "mn1@example.org";
/// The home agent's.
pub const HA_ID: &str = "ha.example.org";

impl std::fmt::Debug for LabIpsec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LabIpsec({}, keys not shown)", self.algorithm)
    }
}

/// `n` random bytes in hex, from the kernel's generator.
fn random_hex(n: usize) -> LabResult<String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| LabError(format!("/dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl LabIpsec {
    /// Keys by IKEv2 with a fresh random pre-shared key, payload protected too, AES-GCM (no
    /// manual key, so RFC 4106's objection to GCM does not apply).
    pub fn ike() -> LabResult<LabIpsec> {
        Ok(LabIpsec {
            algorithm: "aes128gcm16",
            ike_psk: Some(random_hex(24)?),
            ..LabIpsec::random_with_payload()?
        })
    }

    /// Fresh random keys for `aes128-sha256` (48 bytes each: the AES key, then the HMAC key).
    pub fn random() -> LabResult<LabIpsec> {
        Ok(LabIpsec {
            algorithm: "aes128-sha256",
            sa1_key: random_hex(48)?,
            sa2_key: random_hex(48)?,
            mn_wrong_key: false,
            ike_psk: None,
            ike_keylog: false,
            ike_rekey_bytes: None,
            ike_dpd_seconds: 2,
            payload: None,
            bu_detection: None,
        })
    }

    /// Manual AES-GCM-128 keys (20 bytes: key and salt), payload protected too: the
    /// algorithm IKEv2 picks in the lab, for measuring data paths whose care-of address IKE
    /// does not run from yet. The daemons warn (RFC 4106 section 2); a benchmark only.
    pub fn gcm_with_payload() -> LabResult<LabIpsec> {
        Ok(LabIpsec {
            algorithm: "aes128gcm16",
            sa1_key: random_hex(20)?,
            sa2_key: random_hex(20)?,
            payload: Some((random_hex(20)?, random_hex(20)?)),
            ..LabIpsec::random()?
        })
    }

    /// As [`Self::random`], payload protected too.
    pub fn random_with_payload() -> LabResult<LabIpsec> {
        Ok(LabIpsec {
            payload: Some((random_hex(48)?, random_hex(48)?)),
            ..LabIpsec::random()?
        })
    }

    /// The `[ipsec]` section of one end (`mn`: the mobile node), its keys in `<prefix>sa1.key`
    /// and `<prefix>sa2.key` beside the file.
    fn section(&self, mn: bool, prefix: &str) -> String {
        let (local, remote, lt, rt, out_sa, in_sa) = if mn {
            (HOA, HA, "bu", "back", "SA1", "SA2")
        } else {
            (HA, HOA, "back", "bu", "SA2", "SA1")
        };
        let sa = |name: &str, dir: &str, spi: u32, file: &str, tunnel: &str| {
            let keys = match self.ike_psk {
                Some(_) => "keys = \"ike\"\n".to_string(),
                None => format!("spi = {spi:#x}\nkey_file = \"{prefix}{file}\"\n"),
            };
            format!(
                "[[ipsec.sa]]\nname = \"{name}\"\ndirection = \"{dir}\"\n{keys}\
                 algorithm = \"{}\"\n{tunnel}",
                self.algorithm
            )
        };
        let (sa1_dir, sa2_dir) = if mn { ("out", "in") } else { ("in", "out") };
        let mut s = match (mn, self.bu_detection) {
            (true, Some(d)) => format!("[ipsec]\nbu_detection = \"{d}\"\n"),
            _ => "[ipsec]\n".to_string(),
        };
        s += &format!(
            "unmatched = \"bypass\"\nsequence_file = \"{prefix}ipsec-seq.json\"\n\
             [[ipsec.policy]]\nname = \"bu-back\"\nlocal_address = \"{local}\"\n\
             remote_address = \"{remote}\"\nproto = \"mh\"\nlocal_mh_type = \"{lt}\"\n\
             remote_mh_type = \"{rt}\"\nout_sa = \"{out_sa}\"\nin_sa = \"{in_sa}\"\n"
        );
        if self.payload.is_some() {
            // Payload last, on the home addresses alone (seed 001 section 4.2.2): after the
            // signalling policy, whatever else comes from (or goes to) a home address.
            let (pout, pin) = if mn { ("SA3", "SA4") } else { ("SA4", "SA3") };
            for (name, home) in [("payload-v6", HOA), ("payload-v4", POOL)] {
                let (l, r) = if mn { (home, "any") } else { ("any", home) };
                s += &format!(
                    "[[ipsec.policy]]\nname = \"{name}\"\nlocal_address = \"{l}\"\n\
                     remote_address = \"{r}\"\nout_sa = \"{pout}\"\nin_sa = \"{pin}\"\n"
                );
            }
        }
        s += &sa("SA1", sa1_dir, SPI_A, "sa1.key", "");
        s += &sa("SA2", sa2_dir, SPI_B, "sa2.key", "");
        if self.payload.is_some() {
            let ends = |from: &str, to: &str| {
                format!("mode = \"tunnel\"\ntunnel_local = \"{from}\"\ntunnel_remote = \"{to}\"\n")
            };
            let (mine, theirs) = if mn { (HOA, HA) } else { (HA, HOA) };
            let (d3, d4) = if mn { ("out", "in") } else { ("in", "out") };
            let e = ends(mine, theirs);
            s += &sa("SA3", d3, SPI_C, "sa3.key", &e);
            s += &sa("SA4", d4, SPI_D, "sa4.key", &e);
        }
        if self.ike_psk.is_some() {
            s += &if mn {
                // Liveness checked after 2 quiet seconds by default: an idle node notices
                // a restarted home agent within about 3 s (RFC 7296 section 2.21.4); one
                // that sends is told at once, by INVALID_SPI.
                format!(
                    "[ike]\nlocal_id = \"{MN_ID}\"\nremote_id = \"{HA_ID}\"\n\
                     psk_file = \"{prefix}ike.psk\"\ndpd_seconds = {}\n{}",
                    self.ike_dpd_seconds,
                    if self.ike_keylog {
                        format!("keylog_file = \"{prefix}ike.keys\"\n")
                    } else {
                        String::new()
                    }
                ) + &self
                    .ike_rekey_bytes
                    .map(|n| format!("rekey_child_bytes = {n}\n"))
                    .unwrap_or_default()
            } else {
                format!(
                    "[ike]\nlocal_id = \"{HA_ID}\"\n[[ike.peer]]\nid = \"{MN_ID}\"\n\
                     psk_file = \"{prefix}ike.psk\"\nhome_address = \"{HOA}\"\n"
                )
            };
        }
        s
    }
}

/// The mobile node's `[[interfaces]]` when its care-of interface is the IPv6 tunnel `iface`
/// (`m6t0`, `teredo`: `tunnel = true`), with `eth0` second.
pub fn tunnel_interfaces(iface: &str) -> String {
    format!(
        "[[interfaces]]\nname = \"{iface}\"\npreference = 1\ntunnel = true\n\
         [[interfaces]]\nname = \"eth0\"\npreference = 2\n"
    )
}

/// Knobs of the DSMIPv6 scenario.
#[derive(Debug, Clone)]
pub struct DsmipOptions {
    /// NAT keep-alive refresh time the HA announces, seconds.
    pub nat_keepalive: u32,
    /// Lifetime the MN asks for, seconds.
    pub lifetime: u32,
    /// Ask for the F flag.
    pub force_udp: bool,
    /// Ask for and accept the TLV format.
    pub tlv: bool,
    /// The `[[interfaces]]` tables of the MN's file.
    pub interfaces: String,
    /// How the MN's file names its home agent (addresses, or `ha_name` / `ha_domain`).
    pub home_agent: String,
    /// BU and BA protected by ESP with these SAs; `None`: unprotected BUs accepted (the
    /// home agent says `accept_unprotected = true`).
    pub ipsec: Option<LabIpsec>,
    /// The mobile node is a mobile router (RFC 3963) for [`MNP6`] and [`MNP4`], in this
    /// `prefix_mode` ("explicit" or "implicit"), with the namespace `host` behind it.
    pub mobile_router: Option<&'static str>,
    /// More top-level keys for the home agent's file (`key = value` lines).
    pub ha_extra: String,
    /// More top-level keys for the mobile node's file.
    pub mn_extra: String,
}

impl Default for DsmipOptions {
    fn default() -> Self {
        DsmipOptions {
            nat_keepalive: 110,
            lifetime: 400,
            force_udp: false,
            tlv: false,
            interfaces: "[[interfaces]]\nname = \"eth0\"\npreference = 1\n".into(),
            home_agent: format!("ha_address6 = \"{HA}\"\nha_address4 = \"{HA4}\"\n"),
            ipsec: None,
            mobile_router: None,
            ha_extra: String::new(),
            mn_extra: String::new(),
        }
    }
}

impl Lab {
    fn ha_sock(&self) -> PathBuf {
        self.net.dir.join("ha.sock")
    }

    fn mn_sock(&self) -> PathBuf {
        self.net.dir.join("mn.sock")
    }

    /// Where the home agent saves its binding cache.
    pub fn ha_state_file(&self) -> PathBuf {
        self.net.dir.join("ha-bindings.json")
    }

    /// Writes the configurations and starts the home agent, then the mobile node.
    pub fn start_dsmip(&mut self, o: &DsmipOptions) -> LabResult<()> {
        if o.mobile_router.is_some() {
            self.add_mobile_network()?;
        }
        self.write_dsmip_configs(o)?;
        self.start_ha()?;
        self.start_mn()
    }

    /// Starts the mobile node.
    pub fn start_mn(&mut self) -> LabResult<()> {
        let bin = self.bin.display().to_string();
        let mn = self.net.dir.join("mn.toml").display().to_string();
        self.spawn_daemon("mn", "mn", &[&bin, "mn", "--config", &mn])
    }

    /// The mobile network: namespace `host` on the mobile node's `lan0` (2001:db8:77:1::/64
    /// and 198.51.100.96/27, the router at ::1 and .97), default routes toward the router.
    pub fn add_mobile_network(&mut self) -> LabResult<()> {
        self.net.add_role("host")?;
        self.net.sh("host", "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0")?;
        let nb = self.net.ns("host");
        self.net.sh(
            "mn",
            &format!("ip link add lan0 type veth peer name xhosteth0 && ip link set xhosteth0 netns {nb} && ip link set lan0 up && \
                      ip addr add 2001:db8:77:1::1/64 dev lan0 nodad && ip addr add 198.51.100.97/27 dev lan0"),
        )?;
        self.net.sh(
            "host",
            &format!("ip link set xhosteth0 name eth0 && ip link set eth0 up && \
                      ip addr add {HOST6}/64 dev eth0 nodad && ip -6 route add default via 2001:db8:77:1::1 && \
                      ip addr add {HOST4}/27 dev eth0 && ip route add default via 198.51.100.97"),
        )?;
        Ok(())
    }

    /// A way onto the home link for the mobile node: the gateway's side of the home link
    /// becomes a bridge (its addresses and routes moved onto it), and the mobile node's
    /// `home1` joins it, down until [`Self::mn_go_home`].
    pub fn add_home_link_attachment(&mut self) -> LabResult<()> {
        self.net.sh(
            "gw",
            &format!(
                "ip link add homebr type bridge && ip link set homebr up && \
                 ip addr flush dev home0 && ip link set home0 master homebr && \
                 ip addr add {GW6}/64 dev homebr nodad && ip addr add 198.51.100.1/25 dev homebr && \
                 ip -6 route replace 2001:db8::/32 via {HA} && \
                 ip route replace 198.51.100.128/25 via 198.51.100.2"
            ),
        )?;
        let ng = self.net.ns("gw");
        self.net.sh(
            "mn",
            &format!("ip link add home1 type veth peer name xgwmnhome && ip link set xgwmnhome netns {ng}"),
        )?;
        self.net.sh(
            "gw",
            "ip link set xgwmnhome name mnhome && ip link set mnhome master homebr && ip link set mnhome up",
        )?;
        Ok(())
    }

    /// Takes the MN home: `home1` up with an address of the home prefix and the home
    /// agent as router toward the correspondent, the IPv4 address `v4` gone from `eth0`.
    pub fn mn_go_home(&self, v4: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!(
                "ip link set home1 up && ip -6 addr add {MN_AT_HOME}/64 dev home1 nodad && \
                 ip -6 route add 2001:db8:2::/64 via {HA} dev home1 && ip addr del {v4}/24 dev eth0"
            ),
        )?;
        Ok(())
    }

    /// Away from home again, behind the NAT at `v4`.
    pub fn mn_leave_home(&self, v4: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!(
                "ip addr add {v4}/24 dev eth0 && ip route replace default via 192.0.2.1 && \
                 ip -6 route del 2001:db8:2::/64 via {HA} dev home1; \
                 ip -6 addr del {MN_AT_HOME}/64 dev home1; ip link set home1 down"
            ),
        )?;
        Ok(())
    }

    /// Writes a key file readable by root only, as the daemons require.
    fn write_key(&self, name: &str, hex: &str) -> LabResult<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.net.dir.join(name);
        let _ = std::fs::remove_file(&p);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .and_then(|mut f| f.write_all(hex.as_bytes()))
            .map_err(|e| LabError(format!("{}: {e}", p.display())))
    }

    /// Writes `ha.toml` and `mn.toml` (and the key files of `o.ipsec`) into the scratch
    /// directory.
    pub fn write_dsmip_configs(&mut self, o: &DsmipOptions) -> LabResult<()> {
        let (ha_ipsec, mn_ipsec) = match &o.ipsec {
            Some(i) if i.ike_psk.is_some() => {
                let psk = i.ike_psk.as_deref().unwrap_or_default();
                let mn_psk = if i.mn_wrong_key {
                    random_hex(24)?
                } else {
                    psk.to_string()
                };
                self.write_key("ha-ike.psk", psk)?;
                self.write_key("mn-ike.psk", &mn_psk)?;
                (i.section(false, "ha-"), i.section(true, "mn-"))
            }
            Some(i) => {
                self.write_key("ha-sa1.key", &i.sa1_key)?;
                self.write_key("ha-sa2.key", &i.sa2_key)?;
                let mn_sa1 = if i.mn_wrong_key {
                    random_hex(48)?
                } else {
                    i.sa1_key.clone()
                };
                self.write_key("mn-sa1.key", &mn_sa1)?;
                self.write_key("mn-sa2.key", &i.sa2_key)?;
                if let Some((k3, k4)) = &i.payload {
                    for who in ["ha", "mn"] {
                        self.write_key(&format!("{who}-sa3.key"), k3)?;
                        self.write_key(&format!("{who}-sa4.key"), k4)?;
                    }
                }
                (i.section(false, "ha-"), i.section(true, "mn-"))
            }
            None => (String::new(), String::new()),
        };
        let ha = self.net.write(
            "ha.toml",
            &format!(
                "address6 = \"{HA}\"\naddress4 = \"{HA4}\"\nhome_prefix = \"2001:db8:1::/64\"\n\
                 home_link = \"eth0\"\naccept_unprotected = {}\naccept_tlv = {}\n\
                 ipv4_pool = [\"{POOL}\"]\nnat_keepalive = {}\nstate_file = \"{}\"\n\
                 control_socket = \"{}\"\n{}\n[[mobile_node]]\nhome_address = \"{HOA}\"\n{}{ha_ipsec}",
                o.ipsec.is_none(),
                o.tlv,
                o.nat_keepalive,
                self.ha_state_file().display(),
                self.ha_sock().display(),
                o.ha_extra,
                if o.mobile_router.is_some() {
                    format!("router = true\nmobile_network_prefixes = [\"{MNP6}\", \"{MNP4}\"]\n")
                } else {
                    String::new()
                }
            ),
        )?;
        let mn = self.net.write(
            "mn.toml",
            &format!(
                "home_address = \"{HOA}\"\n{}\
                 ipv4_home_address = \"dynamic\"\nlifetime = {}\nforce_udp = {}\nrequest_tlv = {}\n\
                 control_socket = \"{}\"\n{}{}{}{mn_ipsec}",
                o.home_agent,
                o.lifetime,
                o.force_udp,
                o.tlv,
                self.mn_sock().display(),
                o.mn_extra,
                match o.mobile_router {
                    Some(mode) => format!(
                        "router = true\nmobile_network_prefixes = [\"{MNP6}\", \"{MNP4}\"]\nprefix_mode = \"{mode}\"\n"
                    ),
                    None => String::new(),
                },
                o.interfaces
            ),
        )?;
        let _ = (ha, mn);
        Ok(())
    }

    /// (Re)starts the home agent and waits for its control socket.
    pub fn start_ha(&mut self) -> LabResult<()> {
        let _ = std::fs::remove_file(self.ha_sock());
        let bin = self.bin.display().to_string();
        let cfg = self.net.dir.join("ha.toml").display().to_string();
        self.spawn_daemon("ha", "ha", &[&bin, "ha", "--config", &cfg])?;
        let sock = self.ha_sock();
        wait_for(
            "the home agent's control socket",
            Duration::from_secs(10),
            || Ok(sock.exists().then_some(())),
        )
        .map_err(|e| LabError(format!("{e}\n{}", self.net.log("ha"))))
    }

    /// Stops the home agent (SIGTERM: it saves its binding cache).
    pub fn stop_ha(&mut self) {
        self.net.stop("ha");
    }

    /// The home agent's report.
    pub fn ha_report(&self) -> LabResult<Report> {
        self.report(&self.ha_sock())
    }

    /// The mobile node's registration.
    pub fn mn_info(&self) -> LabResult<(MnInfo, Report)> {
        let r = self.report(&self.mn_sock())?;
        match &r {
            Report::MobileNode { mn, .. } => Ok((mn.clone(), r.clone())),
            other => Err(LabError(format!("not a mobile node: {other:?}"))),
        }
    }

    /// Waits until the mobile node is registered with `mode` from a care-of address
    /// starting with `coa_prefix`, after more than `after` registrations.
    pub fn wait_registered(&self, mode: &str, coa_prefix: &str, after: u64) -> LabResult<MnInfo> {
        let sock = self.mn_sock();
        wait_for(
            &format!("a registration in mode {mode} from {coa_prefix}*"),
            Duration::from_secs(30),
            || {
                if !sock.exists() {
                    return Ok(None);
                }
                let (m, _) = self.mn_info()?;
                let ok = m.mode.as_deref() == Some(mode)
                    && m.coa.as_deref().is_some_and(|c| c.starts_with(coa_prefix))
                    && m.registrations > after;
                Ok(ok.then_some(m))
            },
        )
        .map_err(|e| {
            LabError(format!(
                "{e}\nmn log:\n{}\nha log:\n{}",
                self.net.log("mn"),
                self.net.log("ha")
            ))
        })
    }

    /// Moves the MN to a second IPv4 address `to` while `from` stays assigned but
    /// deprecated (preferred lifetime 0): movement detection prefers `to`, and the old
    /// address can still send until the BA moves the tunnel.
    pub fn mn_prefer_v4(&self, from: &str, to: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!(
                "ip addr add {to}/24 dev eth0 && ip addr change {from}/24 dev eth0 preferred_lft 0"
            ),
        )?;
        Ok(())
    }

    /// Moves the MN's IPv4 address from `from` to `to` (same network).
    pub fn mn_renumber_v4(&self, from: &str, to: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!("ip addr add {to}/24 dev eth0 && ip addr del {from}/24 dev eth0 && ip route replace default via 192.0.2.1"),
        )?;
        Ok(())
    }

    /// Moves the MN to the IPv6 network: an IPv6 address and default route appear, IPv4
    /// goes away.
    pub fn mn_to_ipv6(&self, v4: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!("ip -6 addr add {MN6}/64 dev eth0 nodad && ip -6 route add default via {V6_ROUTER} && ip addr del {v4}/24 dev eth0"),
        )?;
        Ok(())
    }

    /// Back to the IPv4-only network behind the NAT.
    pub fn mn_to_ipv4(&self, v4: &str) -> LabResult<()> {
        self.net.sh(
            "mn",
            &format!("ip addr add {v4}/24 dev eth0 && ip route replace default via 192.0.2.1 && ip -6 route del default via {V6_ROUTER}; ip -6 addr del {MN6}/64 dev eth0"),
        )?;
        Ok(())
    }
}

impl Lab {
    /// Makes every link of the lab carry UDP as a link without UDP segmentation offload
    /// does: the daemons' GSO sends (a run of equal-size datagrams as one 64 KiB buffer)
    /// are cut into datagrams before they leave, so that a capture holds what a wire
    /// would, one datagram a packet, for tshark to read. TUN devices keep theirs.
    pub fn segment_udp_on_links(&self) -> LabResult<()> {
        for role in ["mn", "nat", "gw", "ha", "cn"] {
            // Not every lab has every role.
            let _ = self.net.sh(
                role,
                "for i in $(ls /sys/class/net); do [ -e /sys/class/net/$i/tun_flags ] || \
                 ethtool -K $i tx-udp-segmentation off >/dev/null 2>&1; done; true",
            );
        }
        Ok(())
    }

    /// The handover scene of the DSMIPv6 e2e tests: a TCP transfer of `seconds` from the
    /// IPv6 home address to the correspondent (the `tcp_sink.py` / `tcp_source.py` peers of
    /// `peers`), while the mobile node, registered as `first` says, changes its IPv4
    /// address, moves to the IPv6 network and back behind the NAT. Returns the bytes sent
    /// once the transfer ended with both sides' sha256 equal, or what went wrong with the
    /// logs of both ends.
    pub fn tcp_across_moves(
        &mut self,
        peers: &std::path::Path,
        first: &MnInfo,
        seconds: u32,
    ) -> LabResult<u64> {
        let py = |n: &str| peers.join(n).display().to_string();
        self.net
            .spawn("cn", "sink", &["/usr/bin/python3", &py("tcp_sink.py"), CN])?;
        std::thread::sleep(Duration::from_millis(300));
        let secs = seconds.to_string();
        self.net.spawn(
            "mn",
            "source",
            &["/usr/bin/python3", &py("tcp_source.py"), HOA, CN, &secs],
        )?;
        std::thread::sleep(Duration::from_secs(2));
        self.mn_renumber_v4(MN4[0], MN4[1])?;
        let m2 = self.wait_registered("udp", MN4[1], first.registrations)?;
        std::thread::sleep(Duration::from_secs(2));
        self.mn_to_ipv6(MN4[1])?;
        let m3 = self.wait_registered("ipv6", "2001:db8:5::", m2.registrations)?;
        std::thread::sleep(Duration::from_secs(2));
        self.mn_to_ipv4(MN4[0])?;
        self.wait_registered("udp", MN4[0], m3.registrations)?;
        let t = Instant::now();
        while self.net.running("source") && t.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.net.log("source");
        let f: Vec<&str> = out.split_whitespace().collect();
        let why = |w: &str| {
            LabError(format!(
                "{w}: source: {out}\nsink: {}\nmn: {}\nha: {}",
                self.net.log("sink"),
                self.net.log("mn"),
                self.net.log("ha")
            ))
        };
        if f.len() < 5 || f[0] != "sent" {
            return Err(why("the transfer did not end"));
        }
        if f[2] != f[4] {
            return Err(why("sha256 differs"));
        }
        f[1].parse().map_err(|_| why("no byte count"))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The DSMIPv6 part of `m6t lab`.
pub fn run(lab: &mut Lab) -> LabResult<bool> {
    println!("\nDSMIPv6 (RFC 5555): mobile node behind the NAT -> home agent -> correspondent");
    let t = Instant::now();
    let ipsec = LabIpsec::ike()?;
    println!(
        "  IPsec keyed by IKEv2 (RFC 4877 section 4; {MN_ID} and {HA_ID}, pre-shared key, \
         IKE over UDP 4500): BU and BA in a transport-mode CHILD_SA, payload of both home \
         addresses in a tunnel-mode CHILD_SA (RFC 5555 section 5), ESP {}: UDP 4500 behind the \
         NAT, IP/ESP from the IPv6 network",
        ipsec.algorithm
    );
    lab.start_dsmip(&DsmipOptions {
        ipsec: Some(ipsec),
        ..DsmipOptions::default()
    })?;
    let m = lab.wait_registered("udp", "192.0.2.", 0)?;
    println!(
        "  registered through the NAT in {} (BU sent -> BA received {:.2} ms): tunnel {}, IPv4 home address {}",
        ms(t.elapsed()),
        m.last_registration_ms.unwrap_or(f64::NAN),
        m.mode.clone().unwrap_or_default(),
        m.ipv4_home_address.clone().unwrap_or_default()
    );
    let v4hoa = m.ipv4_home_address.clone().unwrap_or_default();
    let p6 = lab.ping_from("mn", HOA, CN, 3)?;
    let p4 = lab.ping_from("mn", &v4hoa, CN4, 3)?;
    println!("  ping CN from the IPv6 home address {p6}/3, CN4 from the IPv4 home address {p4}/3");

    let t1 = Instant::now();
    lab.mn_renumber_v4(MN4[0], MN4[1])?;
    let m2 = lab.wait_registered("udp", MN4[1], m.registrations)?;
    let p = lab.ping_from("mn", HOA, CN, 1)?;
    println!(
        "  IPv4 address change {} -> {}: registered again after {} (BU->BA {:.2} ms), ping {p}/1",
        MN4[0],
        MN4[1],
        ms(t1.elapsed()),
        m2.last_registration_ms.unwrap_or(f64::NAN)
    );

    let t2 = Instant::now();
    lab.mn_to_ipv6(MN4[1])?;
    let m3 = lab.wait_registered("ipv6", "2001:db8:5::", m2.registrations)?;
    let p = lab.ping_from("mn", HOA, CN, 1)?;
    println!(
        "  move to the IPv6 network: registered from {} after {} (BU->BA {:.2} ms), ping {p}/1",
        m3.coa.clone().unwrap_or_default(),
        ms(t2.elapsed()),
        m3.last_registration_ms.unwrap_or(f64::NAN)
    );
    lab.mn_to_ipv4(MN4[0])?;
    let m4 = lab.wait_registered("udp", MN4[0], m3.registrations)?;
    let p = lab.ping_from("mn", HOA, CN, 1)?;
    println!(
        "  back behind the NAT: tunnel {}, ping {p}/1",
        m4.mode.clone().unwrap_or_default()
    );

    let (_, before) = lab.mn_info()?;
    let ike_sas = before.counter("ike_established");
    lab.stop_ha();
    let t3 = Instant::now();
    lab.start_ha()?;
    // The binding cache comes back from its file; the IKE SAs do not. The node pings on:
    // its first ESP meets INVALID_SPI, its liveness check then INVALID_IKE_SPI, and it
    // makes a new IKE SA (RFC 7296 section 2.21.4).
    lab.net.spawn(
        "mn",
        "restart-ping",
        &["ping", "-n", "-q", "-i", "0.1", "-c", "150", "-I", HOA, CN],
    )?;
    let back = loop {
        let (_, r) = lab.mn_info()?;
        if r.counter("ike_established") > ike_sas && r.counter("ike_child_established") >= 4 {
            break Some(t3.elapsed());
        }
        if t3.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lab.net.stop("restart-ping");
    let p = lab.ping_from("mn", HOA, CN, 3)?;
    match back {
        Some(d) => println!(
            "  home agent restarted (binding cache from its file): new IKE SA after {} \
             (ESP met INVALID_SPI, liveness check INVALID_IKE_SPI), ping {p}/3",
            ms(d)
        ),
        None => println!("  home agent restarted: no new IKE SA within 15 s, ping {p}/3"),
    }
    println!(
        "\nhome agent status:\n{}",
        status::render(&lab.ha_report()?)
    );
    Ok(p6 > 0 && p4 > 0 && p > 0)
}

/// The mobile-router part of `m6t lab` (RFC 3963 with RFC 5555's IPv4 prefixes): the
/// mobile node as a mobile router in explicit mode, a host behind it with no mobility
/// software, reaching the correspondent over IPv6 and IPv4 while the router moves.
pub fn run_router(lab: &mut Lab) -> LabResult<bool> {
    println!(
        "\nMobile router (RFC 3963, IPv4 prefixes of RFC 5555): host -> mobile router behind the \
         NAT -> home agent -> correspondent"
    );
    let t = Instant::now();
    lab.start_dsmip(&DsmipOptions {
        mobile_router: Some("explicit"),
        ..DsmipOptions::default()
    })?;
    let m = lab.wait_registered("udp", "192.0.2.", 0)?;
    println!(
        "  registered with R and the prefixes {MNP6}, {MNP4} in {} (BU sent -> BA received \
         {:.2} ms), tunnel {}",
        ms(t.elapsed()),
        m.last_registration_ms.unwrap_or(f64::NAN),
        m.mode.clone().unwrap_or_default()
    );
    let routes = lab.net.sh(
        "ha",
        "ip -4 route show dev mip6ha0; ip -6 route show dev mip6ha0",
    )?;
    println!("  home agent's routes into its TUN:");
    for r in routes.lines() {
        println!("    {r}");
    }
    let p6 = lab.ping_from("host", HOST6, CN, 3)?;
    let p4 = lab.ping_from("host", HOST4, CN4, 3)?;
    println!("  host behind the router: ping CN from {HOST6} {p6}/3, CN4 from {HOST4} {p4}/3");
    lab.mn_renumber_v4(MN4[0], MN4[1])?;
    let m2 = lab.wait_registered("udp", MN4[1], m.registrations)?;
    let a = lab.ping_from("host", HOST6, CN, 1)? + lab.ping_from("host", HOST4, CN4, 1)?;
    println!(
        "  router's IPv4 address {} -> {}: registered again (BU->BA {:.2} ms), host pings {a}/2",
        MN4[0],
        MN4[1],
        m2.last_registration_ms.unwrap_or(f64::NAN)
    );
    lab.mn_to_ipv6(MN4[1])?;
    let m3 = lab.wait_registered("ipv6", "2001:db8:5::", m2.registrations)?;
    let b = lab.ping_from("host", HOST6, CN, 1)? + lab.ping_from("host", HOST4, CN4, 1)?;
    println!(
        "  router to the IPv6 network: care-of {}, host pings {b}/2 (IPv4 inside IPv6)",
        m3.coa.clone().unwrap_or_default()
    );
    lab.mn_to_ipv4(MN4[0])?;
    lab.wait_registered("udp", MN4[0], m3.registrations)?;
    let c = lab.ping_from("host", HOST6, CN, 1)? + lab.ping_from("host", HOST4, CN4, 1)?;
    println!("  back behind the NAT: host pings {c}/2");
    println!(
        "\nhome agent status:\n{}",
        status::render(&lab.ha_report()?)
    );
    Ok(p6 > 0 && p4 > 0 && a > 0 && b > 0 && c > 0)
}

impl Lab {
    /// Pings `dst` from the source address `src` (a home address); returns the replies.
    pub fn ping_from(&self, role: &str, src: &str, dst: &str, count: u32) -> LabResult<u32> {
        let o = self.net.sh_output(
            role,
            &format!("ping -n -c {count} -i 0.2 -W 2 -I {src} {dst}"),
        )?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        Ok(out
            .lines()
            .find(|l| l.contains("received"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }
}
