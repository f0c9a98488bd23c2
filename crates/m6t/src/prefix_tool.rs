//! `m6t prefix`: a ULA /48 by the algorithm of RFC 4193 section 3.2.2, and the /80 of a
//! mobile node (draft section 2.2).

use m6t_wire::{ula, Ipv6Prefix};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds between the NTP epoch (1900) and the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The current time in 64-bit NTP format (RFC 5905): seconds << 32 | fraction.
pub fn ntp_now() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// An EUI-64 for this machine: from the first non-zero MAC address found in sysfs, else
/// from /etc/machine-id (RFC 4193 allows "a system-specific unique value").
pub fn local_eui64() -> [u8; 8] {
    if let Ok(dir) = std::fs::read_dir("/sys/class/net") {
        let mut names: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            if let Ok(s) = std::fs::read_to_string(p.join("address")) {
                let b: Vec<u8> = s
                    .trim()
                    .split(':')
                    .filter_map(|h| u8::from_str_radix(h, 16).ok())
                    .collect();
                if b.len() == 6 && b.iter().any(|x| *x != 0) {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(&b);
                    return ula::eui64_from_mac(m);
                }
            }
        }
    }
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let mut e = [0u8; 8];
    for (i, c) in id.trim().bytes().enumerate() {
        e[i % 8] ^= c;
    }
    e
}

/// Runs the tool: a new /48 unless `ula` is given; the /80 when both IDs are given.
pub fn run(
    ula_in: Option<Ipv6Prefix>,
    subnet_id: Option<u16>,
    mn_id: Option<u16>,
) -> Result<String, String> {
    let base = match ula_in {
        Some(p) if p.len() == 48 => p,
        Some(_) => return Err("--ula: must be a /48".into()),
        None => ula::ula48(ula::global_id(ntp_now(), local_eui64())),
    };
    let mut out = format!("ula48 {base}\n");
    match (subnet_id, mn_id) {
        (Some(s), Some(m)) => {
            let p = ula::mn_prefix80(base, s, m).map_err(|e| e.to_string())?;
            out.push_str(&format!("mn80  {p}\n"));
        }
        (None, None) => {}
        _ => return Err("--subnet-id and --mn-id go together".into()),
    }
    Ok(out)
}
