//! strongSwan judges our IKEv2: a real charon (Debian's strongswan-charon with the
//! kernel-libipsec plugin, which does ESP in userspace on an `ipsec0` TUN) negotiates with
//! our machine, driven by the `ike-peer` tool of this crate, in two namespaces joined by a
//! veth ([`common`]). Then ESP flows both ways between charon's ESP and ours: ICMPv6 echoes
//! between charon's inner address on ipsec0 and our inner address, each side answering the
//! other's. kernel-libipsec does tunnel mode in UDP 4500 only and neither AES-GCM nor ECP
//! here, so the suite is AES-CBC + HMAC-SHA-256 with MODP-2048 and encapsulation is forced.
//!
//! 1. charon initiates to our responder;
//! 2. our initiator to charon as responder;
//! 3. a wrong pre-shared key, each way: AUTHENTICATION_FAILED and one clear line;
//! 4. CHILD_SA and IKE SA rekeys during a stream of echoes, initiated by each side: every
//!    echo answered;
//! 5. liveness: charon's DPD notices our peer gone, a restarted peer is established again,
//!    and our liveness checks notice charon gone;
//! 6. certificates (RSA: this charon has no ECDSA) from a CA openssl made, RFC 7427
//!    signatures each way, charon initiating and responding, then ESP both ways;
//! 7. a certificate from a CA the other side does not trust, each way: AUTHENTICATION_FAILED
//!    and one clear line;
//! 8. charon behind an nftables masquerade NAT initiating to our responder: NAT detection
//!    finds it, IKE_AUTH and ESP-in-UDP (RFC 3948) on 4500 as tshark sees them on the public
//!    side, ESP both ways.

mod common;

use common::{Lab, CHARON_ADDR, NAT_PUBLIC, PEER_ADDR, PUBLIC_ADDR};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHARON_INNER: &str = "2001:db8:f::1";
const OUR_INNER: &str = "2001:db8:1::10";
const PLUGINS: &str = "random nonce aes sha1 sha2 hmac gmp pem pkcs1 x509 pubkey kdf \
                       kernel-libipsec kernel-netlink socket-default vici";

fn swanctl_conf(psk: &str, initiator: bool) -> String {
    let remote_addrs = if initiator {
        PEER_ADDR.to_string()
    } else {
        "%any".into()
    };
    format!(
        r#"connections {{
  m6t {{
    version = 2
    local_addrs = {CHARON_ADDR}
    remote_addrs = {remote_addrs}
    proposals = aes128-sha256-modp2048
    encap = yes
    dpd_delay = 0
    local {{
      auth = psk
      id = ha.example.org
    }}
    remote {{
      auth = psk
      id = mn1@example.org
    }}
    children {{
      c {{
        mode = tunnel
        local_ts = {CHARON_INNER}/128
        remote_ts = {OUR_INNER}/128
        esp_proposals = aes128-sha256
        start_action = none
      }}
    }}
  }}
}}
secrets {{
  ike-mn {{
    id-1 = ha.example.org
    id-2 = mn1@example.org
    secret = "{psk}"
  }}
}}
"#
    )
}

/// Our peer's output lines, collected by a thread.
struct Peer {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    fn start(lab: &mut Lab, role: &str, psk: &str, ping: bool) -> Peer {
        let extra: &[&str] = if ping {
            &["--ping", CHARON_INNER, "--count", "3"]
        } else {
            &[]
        };
        Self::start_with(lab, role, psk, extra)
    }

    fn start_with(lab: &mut Lab, role: &str, psk: &str, extra: &[&str]) -> Peer {
        let psk_file = lab.dir.join("peer.psk");
        std::fs::write(&psk_file, psk).unwrap();
        let psk_args: Vec<String> = if psk.is_empty() {
            Vec::new()
        } else {
            vec!["--psk-file".into(), psk_file.display().to_string()]
        };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.ns[1], env!("CARGO_BIN_EXE_ike-peer")]);
        cmd.args(["--role", role, "--local", &lab.peer_addr.to_string()]);
        cmd.args(["--remote", &lab.charon_addr.to_string()]);
        cmd.args(["--id", "mn1@example.org", "--remote-id", "ha.example.org"]);
        cmd.args(&psk_args);
        cmd.args(["--ike", "aes128-sha256-modp2048", "--esp", "aes128-sha256"]);
        cmd.args(["--local-ts", &format!("{OUR_INNER}/128")]);
        cmd.args(["--remote-ts", &format!("{CHARON_INNER}/128")]);
        // Without a NAT in between encapsulation is forced (kernel-libipsec's tunnel mode
        // needs UDP); behind the NAT lab's NAT, NAT detection must choose it.
        if lab.ns.len() == 2 {
            cmd.arg("--encap");
        }
        cmd.args(["--seconds", "25"]);
        cmd.args(extra);
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        lab.children.push(child);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        let p = Peer { lines };
        assert!(p.wait(5, "ready"), "ike-peer did not start");
        p
    }

    fn wait(&self, secs: u64, prefix: &str) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(prefix))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn count(&self, prefix: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }

    fn dump(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// charon's ipsec0 appears when kernel-libipsec loads; the inner address must be on it
/// before the CHILD_SA installs (lab facts).
fn inner_address_on_ipsec0(lab: &Lab) {
    let t = Instant::now();
    loop {
        let st = Command::new("ip")
            .args(["-n", &lab.ns[0], "link", "show", "ipsec0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if st.success() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no ipsec0: {}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    common::run(&["ip", "-n", &lab.ns[0], "link", "set", "ipsec0", "up"]);
    common::run(&[
        "ip",
        "-n",
        &lab.ns[0],
        "addr",
        "add",
        &format!("{CHARON_INNER}/128"),
        "dev",
        "ipsec0",
        "nodad",
    ]);
}

/// ESP both ways: charon's kernel's echoes (ping from its namespace, through its ESP)
/// answered by our ESP, and, when our peer pings, its echoes answered by charon's kernel.
fn esp_both_ways(lab: &Lab, peer: &Peer, we_ping: bool) {
    if we_ping {
        assert!(
            peer.wait(10, "ping reply"),
            "no echo reply through charon's ESP:\n{}\n{}",
            peer.dump(),
            lab.log()
        );
    }
    let out = Command::new("ip")
        .args([
            "netns", "exec", &lab.ns[0], "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2",
        ])
        .args(["-I", CHARON_INNER, OUR_INNER])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 received"),
        "charon's side ping: {text}\n{}\n{}",
        peer.dump(),
        lab.log()
    );
    // Our peer prints after it sends: its last line may trail charon's last reply.
    let t = Instant::now();
    while peer.count("echo answered") < 3 && t.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(peer.count("echo answered") >= 3, "{}", peer.dump());
    assert_eq!(peer.count("esp drop"), 0, "{}", peer.dump());
}

#[test]
fn charon_initiates_to_our_responder() {
    let mut lab = common::lab("r");
    lab.start_charon(
        PLUGINS,
        "install_routes = yes",
        &swanctl_conf("m6t interop secret", true),
    );
    inner_address_on_ipsec0(&lab);
    let peer = Peer::start(&mut lab, "responder", "m6t interop secret", false);
    let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "10"]);
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    let log = lab
        .wait_log(5, |l| l.contains("CHILD_SA c{1} established"))
        .unwrap_or_else(|| panic!("charon did not establish: {}", lab.log()));
    assert!(log.contains("IKE_SA m6t[1] established"), "{log}");
    assert!(peer.dump().contains("encap=true"));
    esp_both_ways(&lab, &peer, false);
}

#[test]
fn our_initiator_to_charon_as_responder() {
    let mut lab = common::lab("i");
    lab.start_charon(
        PLUGINS,
        "install_routes = yes",
        &swanctl_conf("m6t interop secret", false),
    );
    inner_address_on_ipsec0(&lab);
    let peer = Peer::start(&mut lab, "initiator", "m6t interop secret", true);
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    lab.wait_log(5, |l| l.contains("CHILD_SA c{1} established"))
        .unwrap_or_else(|| panic!("charon did not establish: {}", lab.log()));
    esp_both_ways(&lab, &peer, true);
}

#[test]
fn wrong_psk_each_way_is_authentication_failed() {
    // charon initiates with a key our responder does not share.
    let mut lab = common::lab("w");
    lab.start_charon(PLUGINS, "", &swanctl_conf("charon's secret", true));
    let peer = Peer::start(&mut lab, "responder", "our other secret", false);
    let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "5"]);
    assert!(
        peer.wait(10, "failed AUTHENTICATION_FAILED"),
        "{}",
        peer.dump()
    );
    let line = peer
        .lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("failed"))
        .cloned()
        .unwrap();
    // charon initiates as ha.example.org (one swanctl.conf serves both roles).
    assert!(
        line.contains("ha.example.org") && !line.contains("secret"),
        "{line}"
    );
    lab.wait_log(5, |l| l.contains("AUTHENTICATION_FAILED"))
        .unwrap_or_else(|| panic!("charon did not see AUTHENTICATION_FAILED: {}", lab.log()));
    drop(lab);

    // Our initiator with a key charon does not share.
    let mut lab = common::lab("x");
    lab.start_charon(PLUGINS, "", &swanctl_conf("charon's secret", false));
    let peer = Peer::start(&mut lab, "initiator", "our other secret", false);
    assert!(
        peer.wait(10, "failed AUTHENTICATION_FAILED"),
        "{}\n{}",
        peer.dump(),
        lab.log()
    );
    assert!(
        lab.log().contains("tried 1 shared key")
            || lab.log().contains("verification of AUTH")
            || lab.log().contains("AUTHENTICATION_FAILED"),
        "{}",
        lab.log()
    );
    assert_eq!(peer.count("child up"), 0);
}

/// Rekeys during 40 echoes 200 ms apart: all answered, through the new SAs.
fn rekeys_lose_nothing(ours: bool) {
    let tag = if ours { "k" } else { "K" };
    let mut lab = common::lab(tag);
    lab.start_charon(
        PLUGINS,
        "install_routes = yes",
        &swanctl_conf("m6t interop secret", false),
    );
    inner_address_on_ipsec0(&lab);
    let mut extra = vec!["--ping", CHARON_INNER, "--count", "40", "--interval", "200"];
    if ours {
        extra.extend(["--rekey-child", "2", "--rekey-ike", "5"]);
    }
    let peer = Peer::start_with(&mut lab, "initiator", "m6t interop secret", &extra);
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    if !ours {
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            lab.swanctl(&["--rekey", "--child", "c"]).success(),
            "{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            lab.swanctl(&["--rekey", "--ike", "m6t"]).success(),
            "{}",
            lab.log()
        );
    }
    assert!(
        peer.wait(15, "child rekeyed"),
        "{}\n{}",
        peer.dump(),
        lab.log()
    );
    assert!(
        peer.wait(15, "ike rekeyed"),
        "{}\n{}",
        peer.dump(),
        lab.log()
    );
    let t = Instant::now();
    while peer.count("ping reply") < 40 && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        peer.count("ping reply"),
        40,
        "an echo was lost:\n{}\n{}",
        peer.dump(),
        lab.log()
    );
    assert_eq!(peer.count("esp drop"), 0, "{}", peer.dump());
    assert!(
        peer.count("child down") >= 1,
        "the old pair was deleted: {}",
        peer.dump()
    );
    let log = lab.log();
    assert!(log.contains("rekeyed") || log.contains("rekeying"), "{log}");
    assert!(
        !log.contains("received AUTHENTICATION_FAILED") && !log.contains("INVALID_SYNTAX"),
        "{log}"
    );
}

#[test]
fn rekeys_initiated_by_us_lose_nothing() {
    rekeys_lose_nothing(true);
}

#[test]
fn rekeys_initiated_by_charon_lose_nothing() {
    rekeys_lose_nothing(false);
}

#[test]
fn dead_peers_are_noticed_both_ways_and_a_restart_comes_back() {
    let mut lab = common::lab("d");
    let conf = swanctl_conf("m6t interop secret", false).replace("dpd_delay = 0", "dpd_delay = 2s");
    lab.start_charon(PLUGINS, "install_routes = yes", &conf);
    inner_address_on_ipsec0(&lab);
    let live = ["--dpd", "2", "--retransmit-tries", "2"];
    let peer = Peer::start_with(&mut lab, "initiator", "m6t interop secret", &live);
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    // Our peer dies: charon's liveness checks go unanswered and it gives up.
    common::stop(lab.children.pop().unwrap());
    lab.wait_log(20, |l| l.contains("giving up after"))
        .unwrap_or_else(|| panic!("charon did not notice: {}", lab.log()));
    // A restarted peer is established again.
    let peer = Peer::start_with(&mut lab, "initiator", "m6t interop secret", &live);
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    // charon dies without a word (SIGKILL: SIGTERM would delete the SA politely): our
    // liveness checks notice (2 s quiet, then 1 + 1.8 + 3.2 s of tries).
    let mut charon = lab.children.remove(0);
    charon.kill().unwrap();
    charon.wait().unwrap();
    assert!(
        peer.wait(20, "ike down peer did not answer"),
        "{}",
        peer.dump()
    );
    assert!(peer.count("child down") >= 1, "{}", peer.dump());
}

/// swanctl.conf with certificates: charon is ha.example.org with `ha.pem`, trusts `ca.pem`
/// for mn1@example.org.
fn swanctl_certs(dir: &str, initiator: bool) -> String {
    swanctl_conf("unused", initiator)
        .replace(
            "      auth = psk\n      id = ha.example.org",
            &format!("      auth = pubkey\n      certs = {dir}/ha.pem\n      id = ha.example.org"),
        )
        .replace(
            "      auth = psk\n      id = mn1@example.org",
            &format!("      auth = pubkey\n      cacerts = {dir}/ca.pem\n      id = mn1@example.org"),
        )
        // The private key is loaded from private/ beside swanctl.conf, not from secrets.
        .replace(
            "  ike-mn {\n    id-1 = ha.example.org\n    id-2 = mn1@example.org\n    secret = \"unused\"\n  }\n",
            "",
        )
}

/// A lab with a throwaway PKI: CAs `ca` and `ca2`; charon is ha.example.org with `ha.pem`
/// issued by `ha_ca` and trusts `ca` for mn1@example.org; our peer's certificate `mn.pem`
/// is issued by `mn_ca` and it trusts `ca` for charon. charon is started (initiating when
/// `charon_initiates`); returns the lab and our peer's certificate arguments.
fn cert_lab(tag: &str, ha_ca: &str, mn_ca: &str, charon_initiates: bool) -> (Lab, Vec<String>) {
    use common::pki::{self, Kind};
    let mut lab = common::lab(tag);
    let dir = lab.path();
    let ca = pki::ca(&lab.dir, "ca", Kind::Rsa);
    pki::ca(&lab.dir, "ca2", Kind::Rsa);
    pki::leaf(&lab.dir, ha_ca, "ha", "DNS:ha.example.org", Kind::Rsa);
    let (mc, mk) = pki::leaf(&lab.dir, mn_ca, "mn", "email:mn1@example.org", Kind::Rsa);
    let conf = swanctl_certs(&dir, charon_initiates);
    assert!(
        !conf.contains("secret =") && conf.contains("auth = pubkey"),
        "{conf}"
    );
    // swanctl reads keys from private/ beside the swanctl.conf it loads.
    let private = lab.dir.join("private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::copy(lab.dir.join("ha.key"), private.join("ha.key")).unwrap();
    lab.start_charon(&format!("{PLUGINS} pkcs8"), "install_routes = yes", &conf);
    let extra = ["--cert", &mc.display().to_string(), "--key"]
        .into_iter()
        .map(String::from)
        .chain([
            mk.display().to_string(),
            "--ca".into(),
            ca.display().to_string(),
        ])
        .collect();
    (lab, extra)
}

#[test]
fn certificates_with_rfc7427_signatures_each_way() {
    for ours_initiates in [false, true] {
        let (mut lab, certs) = cert_lab(
            if ours_initiates { "ci" } else { "cr" },
            "ca",
            "ca",
            !ours_initiates,
        );
        inner_address_on_ipsec0(&lab);
        let mut extra: Vec<&str> = certs.iter().map(String::as_str).collect();
        if ours_initiates {
            extra.extend(["--ping", CHARON_INNER, "--count", "3"]);
        }
        let role = if ours_initiates {
            "initiator"
        } else {
            "responder"
        };
        let peer = Peer::start_with(&mut lab, role, "", &extra);
        if !ours_initiates {
            let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "10"]);
        }
        assert!(
            peer.wait(10, "child up"),
            "{}\n{}\nswanctl:\n{}",
            peer.dump(),
            lab.log(),
            lab.swanctl_said()
        );
        let log = lab
            .wait_log(5, |l| l.contains("CHILD_SA c{1} established"))
            .unwrap_or_else(|| panic!("charon did not establish: {}", lab.log()));
        // charon checked our signature against our certificate from its CA.
        assert!(
            log.contains(
                "authentication of 'mn1@example.org' with RSA_EMSA_PKCS1_SHA2_256 successful"
            ),
            "{log}"
        );
        esp_both_ways(&lab, &peer, ours_initiates);
    }
}

/// The one `failed` line our peer printed, after a moment for a second one to show.
fn the_failure(peer: &Peer) -> String {
    std::thread::sleep(Duration::from_millis(500));
    let lines = peer.lines.lock().unwrap();
    let failed: Vec<&String> = lines.iter().filter(|l| l.starts_with("failed")).collect();
    assert_eq!(failed.len(), 1, "one clear line: {}", lines.join("\n"));
    failed[0].clone()
}

#[test]
fn untrusted_certificates_each_way_are_authentication_failed() {
    // charon initiates with a certificate from ca2, which our responder does not trust.
    let (mut lab, certs) = cert_lab("u", "ca2", "ca", true);
    let extra: Vec<&str> = certs.iter().map(String::as_str).collect();
    let peer = Peer::start_with(&mut lab, "responder", "", &extra);
    let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "5"]);
    assert!(
        peer.wait(10, "failed AUTHENTICATION_FAILED"),
        "{}\n{}",
        peer.dump(),
        lab.log()
    );
    let line = the_failure(&peer);
    assert!(
        line.contains("ha.example.org") && line.contains("certificate refused"),
        "{line}"
    );
    lab.wait_log(5, |l| {
        l.contains("received AUTHENTICATION_FAILED notify error")
    })
    .unwrap_or_else(|| panic!("charon did not get AUTHENTICATION_FAILED: {}", lab.log()));
    assert_eq!(peer.count("child up"), 0);
    drop(lab);

    // Our initiator with a certificate from ca2, which charon does not trust.
    let (mut lab, certs) = cert_lab("v", "ca", "ca2", false);
    let extra: Vec<&str> = certs.iter().map(String::as_str).collect();
    let peer = Peer::start_with(&mut lab, "initiator", "", &extra);
    assert!(
        peer.wait(10, "failed AUTHENTICATION_FAILED"),
        "{}\n{}",
        peer.dump(),
        lab.log()
    );
    let line = the_failure(&peer);
    assert!(
        line.contains("refused our authentication as mn1@example.org")
            && line.contains("trusts our certificate's CA"),
        "{line}"
    );
    // charon found no trusted key for us: our certificate's issuer is not its CA.
    let log = lab.log();
    assert!(
        log.contains("no trusted RSA public key found for 'mn1@example.org'"),
        "{log}"
    );
    // ... and said so in its IKE_AUTH response (charon's log abbreviates the notify).
    assert!(
        log.contains("generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]"),
        "{log}"
    );
    assert_eq!(peer.count("child up"), 0);
}

/// A capture on `iface` in namespace `ns` into `pcap`, started before it returns.
fn capture(lab: &mut Lab, ns: usize, iface: &str, pcap: &std::path::Path) {
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns[ns],
            "tshark",
            "-q",
            "-i",
            iface,
            "-w",
        ])
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tshark: run bash scripts/install-deps.sh");
    lab.children.push(child);
    // dumpcap writes the pcapng section header once it captures.
    let t = Instant::now();
    while std::fs::metadata(pcap).map_or(0, |m| m.len()) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "tshark did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tshark's reading of `pcap`: per packet, the fields asked for, tab-separated.
fn tshark_fields(pcap: &std::path::Path, filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(["-Y", filter, "-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

#[test]
fn charon_behind_a_nat_initiates_to_our_responder() {
    through_a_nat(true);
}

#[test]
fn our_initiator_behind_a_nat_to_charon() {
    through_a_nat(false);
}

/// The inside side (charon when `charon_inside`, else ours) initiates through the NAT to
/// the public side: NAT detection on both, IKE_AUTH and ESP-in-UDP on the public side's
/// 4500 (tshark on the public side's link), ESP both ways.
fn through_a_nat(charon_inside: bool) {
    let mut lab = common::nat_lab(if charon_inside { "n" } else { "m" }, charon_inside);
    let pcap = lab.dir.join("public.pcap");
    // The public side's namespace: ours (1) or charon's (0).
    capture(&mut lab, usize::from(charon_inside), "pub0", &pcap);
    // No forced encapsulation: NAT detection must find the NAT.
    let conf = swanctl_conf("m6t interop secret", charon_inside)
        .replace(
            &format!("local_addrs = {CHARON_ADDR}"),
            &format!("local_addrs = {}", lab.charon_addr),
        )
        .replace(
            &format!("remote_addrs = {PEER_ADDR}"),
            &format!("remote_addrs = {PUBLIC_ADDR}"),
        )
        .replace("    encap = yes\n", "");
    assert!(!conf.contains("encap") && conf.contains(&PUBLIC_ADDR.to_string()));
    lab.start_charon(PLUGINS, "install_routes = yes", &conf);
    inner_address_on_ipsec0(&lab);
    let ping = ["--ping", CHARON_INNER, "--count", "3"];
    let role = if charon_inside {
        "responder"
    } else {
        "initiator"
    };
    let peer = Peer::start_with(&mut lab, role, "m6t interop secret", &ping);
    if charon_inside {
        let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "10"]);
    }
    assert!(peer.wait(10, "child up"), "{}\n{}", peer.dump(), lab.log());
    let log = lab
        .wait_log(5, |l| l.contains("CHILD_SA c{1} established"))
        .unwrap_or_else(|| panic!("charon did not establish: {}", lab.log()));
    // Each side's NAT detection (ours: nat = (in front of us, in front of the peer)), and
    // neither sees a NAT where there is none: each checks the other's NAT-D hashes. Our
    // "in front of the peer" is true both ways: with kernel-libipsec charon always fakes
    // its NAT_DETECTION_SOURCE_IP (it needs UDP encapsulation), so only charon's own
    // verdicts and ours about us tell the NAT's place.
    let (theirs, not_theirs, ours, remote) = if charon_inside {
        (
            "local host is behind NAT",
            "remote host is behind NAT",
            "nat=(false, true)",
            format!("remote={NAT_PUBLIC}:"),
        )
    } else {
        (
            "remote host is behind NAT",
            "local host is behind NAT",
            "nat=(true, true)",
            format!("remote={PUBLIC_ADDR}:4500"),
        )
    };
    assert!(log.contains(theirs) && !log.contains(not_theirs), "{log}");
    let up = peer
        .lines
        .lock()
        .unwrap()
        .iter()
        .find(|l| l.starts_with("ike up"))
        .cloned()
        .unwrap();
    assert!(
        up.contains(&remote) && up.contains(ours),
        "{up}\n{}",
        lab.log()
    );
    assert!(peer.dump().contains("encap=true"), "{}", peer.dump());
    esp_both_ways(&lab, &peer, true);

    // The public side, as tshark sees it.
    // dumpcap writes in its own time: a moment before it stops.
    std::thread::sleep(Duration::from_secs(1));
    // tshark started first.
    common::stop(lab.children.remove(0));
    let public = PUBLIC_ADDR.to_string();
    let init = tshark_fields(
        &pcap,
        "isakmp.exchangetype == 34",
        &["ip.src", "udp.srcport", "udp.dstport"],
    );
    assert!(
        init.iter()
            .any(|f| f[0] == NAT_PUBLIC.to_string() && f[2] == "500"),
        "IKE_SA_INIT from the NAT's address: {init:?}"
    );
    let auth = tshark_fields(
        &pcap,
        "isakmp.exchangetype == 35",
        &["ip.src", "udp.srcport", "udp.dstport"],
    );
    assert!(auth.len() >= 2, "IKE_AUTH request and response: {auth:?}");
    for f in &auth {
        let port = if f[0] == public { &f[1] } else { &f[2] };
        assert_eq!(
            port, "4500",
            "IKE_AUTH not on 4500 (non-ESP marker): {auth:?}"
        );
    }
    // ESP in UDP both ways, all on the public side's 4500: charon's 3 echoes and our
    // answers, our 3 echoes and the answers we got (as responder, our first echo leaves
    // with our IKE_AUTH response and may reach charon before it installed the CHILD_SA).
    let replies = peer.count("ping reply");
    let esp = tshark_fields(
        &pcap,
        "udp && esp",
        &["ip.src", "udp.srcport", "udp.dstport", "esp.spi"],
    );
    let from_public = esp
        .iter()
        .filter(|f| f[0] == public && f[1] == "4500")
        .count();
    let to_public = esp
        .iter()
        .filter(|f| f[0] != public && f[2] == "4500")
        .count();
    let (from_us, to_us) = if charon_inside {
        (from_public, to_public)
    } else {
        (to_public, from_public)
    };
    assert!(from_us >= 6 && to_us >= 3 + replies, "ESP in UDP: {esp:?}");
    assert_eq!(from_public + to_public, esp.len(), "{esp:?}");
    assert!(
        tshark_fields(&pcap, "esp && !udp", &["frame.number"]).is_empty(),
        "bare ESP on the public side"
    );
}
