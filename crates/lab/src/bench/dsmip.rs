//! DSMIPv6's data path in the bench, beside m6t in the same run (the comparison of seed 004,
//! first rows): TCP both ways and the 64-byte UDP rate on the IPv6 home address through the
//! NAT — payload in the clear in UDP 4191 (BU and BA in ESP, as deployed), then payload in
//! tunnel-mode ESP in UDP 4500 (RFC 5555 section 5, aes128-sha256).

use super::{tcp, udp_pps_with, BenchOptions, Table};
use crate::lab::dsmip::{DsmipOptions, LabIpsec, HOA};
use crate::lab::{Lab, CN};
use crate::netns::LabResult;

/// Runs the DSMIPv6 home agent and mobile node next to the m6t lab, measures, stops them.
pub(super) fn figures(lab: &mut Lab, t: &mut Table, o: &BenchOptions) -> LabResult<()> {
    for (label, ipsec) in [
        ("dsmip", LabIpsec::random()?),
        ("dsmip+esp", LabIpsec::random_with_payload()?),
    ] {
        lab.write_dsmip_configs(&DsmipOptions {
            ipsec: Some(ipsec),
            ..DsmipOptions::default()
        })?;
        lab.start_ha()?;
        lab.start_mn()?;
        // Wherever the m6t handovers left the MN's IPv4 address.
        lab.wait_registered("udp", "192.0.2.", 0)?;
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
        t.add_runs(
            &format!("{label} udp 64 B MN->CN"),
            udp_pps_with(lab, CN, 64, &from_hoa, o)?,
            "pkt/s",
        );
        lab.net.stop("mn");
        lab.stop_ha();
    }
    Ok(())
}
