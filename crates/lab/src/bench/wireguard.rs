//! WireGuard in the bench, the userspace tunnel m6t is compared against (issue 13):
//! wireguard-go (the userspace implementation, as Debian ships it) configured with `wg`, one
//! end on the MN behind the same NAT as m6t's client, the other on the gateway host, IPv6
//! inside only. Only the MN's traffic from [`WG_MN`] enters the tunnel (a policy rule), so
//! m6t's own routes stay as they are and both run side by side.

use super::compare::{attach, mn_v4, overhead, timed_change, Event};
use super::{tcp, udp_pps_with, BenchOptions, Table};
use crate::lab::{wait_for, Lab, CN, GW4, GW6};
use crate::netns::{LabError, LabResult};
use std::time::Duration;

/// The MN's inner address on its WireGuard interface (a ULA; it never changes on a move).
pub(super) const WG_MN: &str = "fd00:6d36:77::2";
/// The gateway host's inner address.
pub(super) const WG_GW: &str = "fd00:6d36:77::1";
/// The inner prefix, routed by the home agent to the gateway host.
const WG_PREFIX: &str = "fd00:6d36:77::/64";
/// WireGuard's usual port, on the gateway host.
const PORT: u16 = 51820;
/// The MN's routing table for traffic from [`WG_MN`] (wg-quick's number).
const TABLE: u32 = 51820;
/// The two interfaces. wireguard-go's UAPI socket is `/var/run/wireguard/<name>.sock`,
/// shared by every namespace of the machine, so the two ends need different names.
const MN_IF: &str = "m6twg-mn";
const GW_IF: &str = "m6twg-gw";
/// How long the MN stays without an IPv4 address in the attach figure (as for the others).
const ATTACH_GAP: Duration = Duration::from_millis(1500);

/// Starts both ends with fresh keys and waits until a ping from [`WG_MN`] reaches the
/// correspondent through the tunnel.
pub(super) fn start(lab: &mut Lab) -> LabResult<()> {
    let d = lab.net.dir.clone();
    let (mn_key, gw_key) = (d.join("wg-mn.key"), d.join("wg-gw.key"));
    let (mn_key, gw_key) = (mn_key.display(), gw_key.display());
    // The private keys stay in files readable by root only; only the public ones are read.
    lab.net.sh(
        "mn",
        &format!("umask 077 && wg genkey > {mn_key} && wg genkey > {gw_key}"),
    )?;
    let mn_pub = lab.net.sh("mn", &format!("wg pubkey < {mn_key}"))?;
    let gw_pub = lab.net.sh("mn", &format!("wg pubkey < {gw_key}"))?;
    let (mn_pub, gw_pub) = (mn_pub.trim(), gw_pub.trim());
    for (role, name, ifname) in [("gw", "wireguard-gw", GW_IF), ("mn", "wireguard-mn", MN_IF)] {
        // Foreground, so the lab's cleanup ends it; verbose, so its log tells what it did.
        lab.net.spawn(
            role,
            name,
            &[
                "env",
                "LOG_LEVEL=verbose",
                "WG_PROCESS_FOREGROUND=1",
                "wireguard-go",
                "-f",
                ifname,
            ],
        )?;
        let net = &lab.net;
        wait_for(
            &format!("wireguard-go's {ifname}"),
            Duration::from_secs(10),
            || {
                let o = net.sh_output(role, &format!("wg show {ifname} >/dev/null 2>&1"))?;
                Ok(o.status.success().then_some(()))
            },
        )
        .map_err(|e| LabError(format!("{e}\n{}", lab.net.log(name))))?;
    }
    lab.net.sh(
        "gw",
        &format!(
            "wg set {GW_IF} private-key {gw_key} listen-port {PORT} peer {mn_pub} allowed-ips {WG_MN}/128 && \
             ip -6 addr add {WG_GW}/64 dev {GW_IF} nodad && ip link set {GW_IF} up"
        ),
    )?;
    // Keep-alives every 25 s, as a roaming client behind a NAT is told to use.
    lab.net.sh(
        "mn",
        &format!(
            "wg set {MN_IF} private-key {mn_key} peer {gw_pub} allowed-ips ::/0 endpoint {GW4}:{PORT} \
             persistent-keepalive 25 && \
             ip -6 addr add {WG_MN}/128 dev {MN_IF} nodad && ip link set {MN_IF} up && \
             ip -6 route add default dev {MN_IF} table {TABLE} && \
             ip -6 rule add from {WG_MN} lookup {TABLE}"
        ),
    )?;
    lab.net
        .sh("ha", &format!("ip -6 route add {WG_PREFIX} via {GW6}"))?;
    wait_for("a ping through WireGuard", Duration::from_secs(15), || {
        let o = lab
            .net
            .sh_output("mn", &format!("ping -n -c 1 -W 1 -I {WG_MN} {CN}"))?;
        Ok(o.status.success().then_some(()))
    })
    .map_err(|e| {
        LabError(format!(
            "{e}\n{}{}",
            lab.net.log("wireguard-mn"),
            lab.net.log("wireguard-gw")
        ))
    })
}

/// Stops both ends and removes what [`start`] added (the other systems run in the same lab
/// afterwards).
pub(super) fn stop(lab: &mut Lab) {
    lab.net.stop("wireguard-mn");
    lab.net.stop("wireguard-gw");
    let _ = lab.net.sh_output(
        "mn",
        &format!(
            "ip -6 rule del from {WG_MN} lookup {TABLE}; ip -6 route flush table {TABLE}; \
             ip link del {MN_IF}; true"
        ),
    );
    let _ = lab
        .net
        .sh_output("gw", &format!("ip link del {GW_IF} 2>/dev/null; true"));
    let _ = lab.net.sh_output(
        "ha",
        &format!("ip -6 route del {WG_PREFIX} via {GW6} 2>/dev/null; true"),
    );
    for k in ["wg-mn.key", "wg-gw.key"] {
        let _ = std::fs::remove_file(lab.net.dir.join(k));
    }
}

/// Starts WireGuard next to m6t, measures, stops it.
pub(super) fn figures(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    start(lab)?;
    let r = measure(lab, t, o);
    stop(lab);
    r
}

/// Puts the default route back should an address change have taken it away.
fn default_route(lab: &Lab) -> LabResult<()> {
    lab.net.sh(
        "mn",
        "ip route show default | grep -q 'via 192.0.2.1' || ip route add default via 192.0.2.1",
    )?;
    Ok(())
}

fn measure(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    let from = format!("-B {WG_MN}");
    t.add_runs(
        "wireguard tcp MN->CN",
        tcp(lab, "cn", CN, &from, o)?,
        "Gbit/s",
    );
    t.add_runs(
        "wireguard tcp CN->MN",
        tcp(lab, "cn", CN, &format!("{from} -R"), o)?,
        "Gbit/s",
    );
    t.add_runs(
        "wireguard udp 64 B MN->CN",
        udp_pps_with(lab, CN, 64, &from, o)?,
        "pkt/s",
    );
    overhead(lab, t, "wireguard", Some(WG_MN), CN)?;
    // The inner address stays the same across a move: the clock stops at the first reply
    // to a request sent after the change, whichever path it took.
    let mut hos = Vec::new();
    for _ in 0..o.runs {
        let (from, to) = mn_v4(lab)?;
        hos.push(timed_change(
            lab,
            &format!("ip addr add {to}/24 dev eth0 && ip addr del {from}/24 dev eth0"),
            Event {
                deleted: true,
                address: from,
            },
            Some(WG_MN),
            CN,
            o.teredo_handover_cap,
        )?);
        default_route(lab)?;
        std::thread::sleep(Duration::from_millis(300));
    }
    t.add_runs("wireguard handover", hos, "ms");
    let mut att = Vec::new();
    for _ in 0..o.runs {
        att.push(attach(
            lab,
            Some(WG_MN),
            CN,
            ATTACH_GAP,
            o.teredo_handover_cap,
        )?);
        std::thread::sleep(Duration::from_millis(300));
    }
    t.add_runs("wireguard attach", att, "ms");
    Ok(())
}
