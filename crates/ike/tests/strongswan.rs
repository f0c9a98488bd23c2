//! A peer we did not write judges our parser: a real strongSwan charon (Debian's
//! strongswan-charon and strongswan-swanctl, from scripts/install-deps.sh) initiates an IKE SA
//! with a PSK connection, and the IKE_SA_INIT request it sends is caught by a plain UDP
//! socket of the test. [`Message::parse`] must decode its proposals, KE group, nonce and NAT
//! detection notifies (whose SHA-1 hashes are recomputed here from RFC 7296 section 2.23),
//! and [`Message::emit`] must give back the very same bytes.
//!
//! Needs root (network namespaces, like the e2e tests). Like them it takes no lock itself:
//! whoever shares the machine runs it under theirs (`flock /tmp/m6t-ns.lock cargo test ...`),
//! and a lock taken here would deadlock under such a caller. The namespaces are named after
//! the test's pid, so two runs never meet. Everything runs inside the two namespaces the
//! test creates and removes:
//! charon in one (192.0.2.1, with a private tmpfs on /run for its compiled-in pid file, its
//! own strongswan.conf through `STRONGSWAN_CONF` and its vici socket in a private directory),
//! the UDP listener in the other (192.0.2.2); a veth pair joins them and nothing else, so
//! charon cannot reach outside. A guard kills charon and the listener and removes both
//! namespaces and the directory even when an assertion fails.

mod common;

use common::{Lab, CHARON_ADDR, PEER_ADDR};
use m6t_ike::{
    dh, encr, exchange, flags, integ, notify, prf, protocol, transform_type as tt, Message,
    Payload, Proposal, Transform,
};
use sha1::{Digest, Sha1};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Two IKE proposals with several transforms of one type and Key Length attributes.
fn swanctl_conf() -> String {
    format!(
        r#"connections {{
  m6t {{
    version = 2
    local_addrs = {CHARON_ADDR}
    remote_addrs = {PEER_ADDR}
    proposals = aes256-sha256-modp2048, aes128-sha256-prfsha256-modp3072-modp2048
    local {{
      auth = psk
      id = mn@example.org
    }}
    remote {{
      auth = psk
      id = ha.example.org
    }}
    children {{
      c {{
        local_ts = {CHARON_ADDR}/32
        remote_ts = {PEER_ADDR}/32
      }}
    }}
  }}
}}
secrets {{
  ike-ha {{
    id = ha.example.org
    secret = "m6t test only"
  }}
}}
"#
    )
}

/// Starts the listener in our namespace, then charon, has charon initiate, and returns the
/// UDP payload the listener received.
fn capture_sa_init(lab: &mut Lab) -> Vec<u8> {
    let dir = lab.path();
    let listener_py = format!(
        "import socket,sys\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('{PEER_ADDR}',500))\n\
         s.settimeout(20)\n\
         print('ready',flush=True)\n\
         d,a=s.recvfrom(65535)\n\
         open(sys.argv[1],'wb').write(d)\n"
    );
    let mut listener = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns[1],
            "/usr/bin/python3",
            "-c",
            &listener_py,
        ])
        .arg(format!("{dir}/sa_init.bin"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(listener.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the UDP listener did not start");
    // Only what an IKE_SA_INIT with PSK and MODP groups needs; no plugin that could reach out.
    lab.start_charon(
        "random nonce aes sha1 sha2 hmac gmp pem pkcs1 x509 pubkey kernel-netlink socket-default vici",
        "install_routes = no\n  install_virtual_ip = no",
        &swanctl_conf(),
    );
    // Nobody answers, so the initiation times out; its request is all we want.
    let _ = lab.swanctl(&["--initiate", "--child", "c", "--timeout", "2"]);
    let t = Instant::now();
    loop {
        if let Some(st) = listener.try_wait().unwrap() {
            assert!(st.success(), "the UDP listener got nothing");
            break;
        }
        if t.elapsed() > Duration::from_secs(20) {
            lab.children.push(listener);
            panic!("no IKE_SA_INIT within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read(lab.dir.join("sa_init.bin")).unwrap()
}

/// RFC 7296 section 2.23: SHA-1(SPIi | SPIr | IP address | port).
fn nat_hash(ispi: u64, rspi: u64, addr: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(ispi.to_be_bytes());
    h.update(rspi.to_be_bytes());
    h.update(addr.octets());
    h.update(port.to_be_bytes());
    h.finalize().to_vec()
}

#[test]
fn strongswan_ike_sa_init_parses_and_reemits() {
    let mut lab = common::lab("s");
    let bytes = capture_sa_init(&mut lab);
    let m = Message::parse(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"));

    // Header: a first IKE_SA_INIT request.
    assert_eq!(m.header.exchange_type, exchange::IKE_SA_INIT);
    assert_eq!(m.header.flags, flags::I);
    assert_eq!(m.header.message_id, 0);
    assert_eq!(m.header.responder_spi, 0);
    assert_ne!(m.header.initiator_spi, 0);

    // The proposals of swanctl.conf, in strongSwan's order: ENCR, INTEG, PRF, D-H, and
    // within a type its own preference (modp2048 before modp3072, whatever the config says).
    let Payload::Sa(sa) = &m.payloads[0] else {
        panic!("first payload is not SA: {:?}", m.payloads[0]);
    };
    let ike = |number, key_bits, dhs: &[u16]| Proposal {
        number,
        protocol: protocol::IKE,
        spi: vec![],
        transforms: [
            Transform::with_key_length(tt::ENCR, encr::AES_CBC, key_bits),
            Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128),
            Transform::new(tt::PRF, prf::HMAC_SHA2_256),
        ]
        .into_iter()
        .chain(dhs.iter().map(|&g| Transform::new(tt::DH, g)))
        .collect(),
    };
    assert_eq!(
        sa.proposals,
        vec![
            ike(1, 256, &[dh::MODP_2048]),
            ike(2, 128, &[dh::MODP_2048, 15])
        ]
    );

    // KE in the first proposal's group, a 2048-bit value.
    let ke = m
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::Ke(k) => Some(*k),
            _ => None,
        })
        .expect("no KE");
    assert_eq!(ke.group, dh::MODP_2048);
    assert_eq!(ke.data.len(), 256);
    let nonce = m
        .payloads
        .iter()
        .find_map(|p| match p {
            Payload::Nonce(n) => Some(*n),
            _ => None,
        })
        .expect("no Nonce");
    assert_eq!(nonce.len(), 32, "strongSwan's nonce is 32 bytes");

    // NAT detection: the hashes of charon's source and of our address, as section 2.23 says.
    let spi = m.header.initiator_spi;
    let src = m
        .notify(notify::NAT_DETECTION_SOURCE_IP)
        .expect("no NAT_D source");
    let dst = m
        .notify(notify::NAT_DETECTION_DESTINATION_IP)
        .expect("no NAT_D dest");
    assert_eq!(src.data, nat_hash(spi, 0, CHARON_ADDR, 500));
    assert_eq!(dst.data, nat_hash(spi, 0, PEER_ADDR, 500));
    // Its other status notifies, kept as numbers or named: fragmentation, hash algorithms.
    assert!(m.notify(notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some());
    assert!(m.notify(notify::SIGNATURE_HASH_ALGORITHMS).is_some());

    // And back to the same bytes.
    let mut again = vec![0u8; m.emit_len()];
    assert_eq!(m.emit(&mut again), Ok(bytes.len()));
    assert_eq!(again, bytes, "re-emitted message differs");
}
