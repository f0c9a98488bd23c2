//! DSMIPv6's data path in the bench, beside m6t in the same run (the comparison of seed 004,
//! first rows): TCP both ways and the 64-byte UDP rate on the IPv6 home address through the
//! NAT — payload in the clear in UDP 4191 (BU and BA in ESP, as deployed), then without the
//! NAT (IPv6 in IPv4, protocol 41), then payload in tunnel-mode ESP in UDP 4500 (RFC 5555
//! section 5, AES-GCM-128) — each with the overhead capture of the comparison.

use super::compare::overhead;
use super::{tcp, udp_pps_with, BenchOptions, Table};
use crate::lab::dsmip::{DsmipOptions, LabIpsec, HA4, HOA};
use crate::lab::{Lab, CN, NAT_PUBLIC};
use crate::netns::LabResult;

/// Runs the DSMIPv6 home agent and mobile node next to the m6t lab, measures, stops them.
pub(super) fn figures(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    for (label, ipsec, nat) in [
        ("dsmip", LabIpsec::random()?, true),
        ("dsmip ip-in-ip", LabIpsec::random()?, false),
        ("dsmip+esp", LabIpsec::gcm_with_payload()?, true),
    ] {
        if !nat {
            set_nat(lab, false)?;
        }
        let res = one(lab, t, o, label, ipsec, nat);
        if !nat {
            set_nat(lab, true)?;
        }
        res?;
    }
    Ok(())
}

/// The NAT masquerading or not (the MN's addresses routed as they are: the public side
/// routes 192.0.2.0/24 to it). Flows to the home agent's IPv4 address are forgotten both
/// ways, so that none keeps the translation it was made with.
fn set_nat(lab: &Lab, on: bool) -> LabResult<()> {
    let rule = if on {
        format!(
            "nft add rule ip nat post oifname out0 snat to {}",
            NAT_PUBLIC[0]
        )
    } else {
        "nft flush chain ip nat post".to_string()
    };
    lab.net.sh(
        "nat",
        &format!("{rule} && (conntrack -D -d {HA4} >/dev/null 2>&1; conntrack -D -s {HA4} >/dev/null 2>&1; true)"),
    )?;
    Ok(())
}

fn one(
    lab: &mut Lab,
    t: &mut Table,
    o: &BenchOptions,
    label: &str,
    ipsec: LabIpsec,
    nat: bool,
) -> LabResult<()> {
    lab.write_dsmip_configs(&DsmipOptions {
        ipsec: Some(ipsec),
        ..DsmipOptions::default()
    })?;
    lab.start_ha()?;
    lab.start_mn()?;
    let res = (|| {
        // Wherever the m6t handovers left the MN's IPv4 address.
        lab.wait_registered(if nat { "udp" } else { "ip-in-ip" }, "192.0.2.", 0)?;
        home_tcp(lab, t, o, label)?;
        let from_hoa = format!("-B {HOA}");
        t.add_runs(
            &format!("{label} udp 64 B MN->CN"),
            udp_pps_with(lab, CN, 64, &from_hoa, o)?,
            "pkt/s",
        );
        overhead(lab, t, label, Some(HOA), CN)
    })();
    lab.net.stop("mn");
    lab.stop_ha();
    res
}

/// `<label> tcp MN->CN` and `<label> tcp CN->MN`: TCP both ways on the IPv6 home address.
pub(super) fn home_tcp(
    lab: &mut Lab,
    t: &mut Table,
    o: &BenchOptions,
    label: &str,
) -> LabResult<()> {
    let from_hoa = format!("-B {HOA}");
    t.add_runs(
        &format!("{label} tcp MN->CN"),
        tcp(lab, "cn", CN, &from_hoa, o)?,
        "Gbit/s",
    );
    t.add_runs(
        &format!("{label} tcp CN->MN"),
        tcp(lab, "cn", CN, &format!("{from_hoa} -R"), o)?,
        "Gbit/s",
    );
    Ok(())
}
