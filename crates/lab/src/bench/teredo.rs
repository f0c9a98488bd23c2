//! Teredo (RFC 4380) with miredo, the incumbent of seed 004, in the same namespaces: server
//! and relay on the gateway host (the server needs two consecutive IPv4 addresses), client
//! on the MN behind the same NAT. A ULA Teredo prefix and the lab server only: the packaged
//! configuration (with its public server) is never read.

use crate::lab::{Lab, TEREDO_PREFIX};
use crate::netns::{LabError, LabResult};
use std::time::{Duration, Instant};

/// The lab Teredo server's two addresses and the relay's.
pub const SERVER: [&str; 2] = ["203.0.113.4", "203.0.113.5"];
/// The relay's address.
pub const RELAY: &str = "203.0.113.6";

fn prefix() -> &'static str {
    TEREDO_PREFIX.split('/').next().unwrap_or("fd00:3544::")
}

/// Starts server and relay on the gateway host.
pub fn start_infrastructure(lab: &mut Lab) -> LabResult<()> {
    let d = lab.net.dir.clone();
    lab.net.sh(
        "gw",
        &format!(
            "ip addr add {}/24 dev br0 && ip addr add {}/24 dev br0 && ip addr add {RELAY}/24 dev br0",
            SERVER[0], SERVER[1]
        ),
    )?;
    let server = lab.net.write(
        "teredo-server.conf",
        &format!("ServerBindAddress {}\nPrefix {}\n", SERVER[0], prefix()),
    )?;
    let relay = lab.net.write(
        "teredo-relay.conf",
        &format!(
            "RelayType relay\nInterfaceName teredo\nBindAddress {RELAY}\nPrefix {}\n",
            prefix()
        ),
    )?;
    let (s, r) = (server.display().to_string(), relay.display().to_string());
    let sp = d.join("teredo-server.pid").display().to_string();
    let rp = d.join("teredo-relay.pid").display().to_string();
    lab.net.spawn(
        "gw",
        "miredo-server",
        &["miredo-server", "-f", "-c", &s, "-p", &sp],
    )?;
    lab.net
        .spawn("gw", "miredo-relay", &["miredo", "-f", "-c", &r, "-p", &rp])?;
    std::thread::sleep(Duration::from_millis(300));
    if !lab.net.running("miredo-server") || !lab.net.running("miredo-relay") {
        return Err(LabError(format!(
            "miredo server/relay did not start: {}{}",
            lab.net.log("miredo-server"),
            lab.net.log("miredo-relay")
        )));
    }
    Ok(())
}

/// Starts the Teredo client on the MN; returns the qualification time (start to a Teredo
/// address on the interface).
pub fn start_client(lab: &mut Lab) -> LabResult<Duration> {
    let conf = lab.net.write(
        "teredo-client.conf",
        &format!(
            "RelayType client\nInterfaceName teredo\nServerAddress {}\n",
            SERVER[0]
        ),
    )?;
    let c = conf.display().to_string();
    let p = lab.net.dir.join("teredo-client.pid").display().to_string();
    let t0 = Instant::now();
    lab.net
        .spawn("mn", "miredo-client", &["miredo", "-f", "-c", &c, "-p", &p])?;
    loop {
        let a = teredo_address(lab)?;
        if a.is_some() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(LabError(format!(
                "Teredo client did not qualify: {}",
                lab.net.log("miredo-client")
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The MN's current Teredo address, if qualified.
pub fn teredo_address(lab: &Lab) -> LabResult<Option<String>> {
    let o = lab.net.sh_output(
        "mn",
        "ip -6 -o addr show dev teredo scope global 2>/dev/null",
    )?;
    let out = String::from_utf8_lossy(&o.stdout);
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .map(|a| a.split('/').next().unwrap_or("").to_string()))
}

/// Stops the client (its default route goes with it).
pub fn stop_client(lab: &mut Lab) {
    lab.net.stop("miredo-client");
}
