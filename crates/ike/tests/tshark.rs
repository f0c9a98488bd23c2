//! A peer we did not write judges our emitter: tshark's ISAKMP/IKEv2 dissector decodes an
//! IKE_SA_INIT request built by [`Message::emit`] (written into a pcap as UDP/500 over IPv4)
//! and must report the SPI, exchange type, proposals and transforms, key lengths, KE group,
//! KE data, nonce and NAT detection notifies we put in, with no malformed packet.
//! tshark comes from scripts/install-deps.sh; without it the test fails (it must be able to).

use m6t_ike::{
    dh, encr, exchange, flags, integ, notify, prf, protocol, transform_type as tt, HeaderRepr,
    KeyExchange, Message, Notify, Payload, Proposal, SaPayload, Transform,
};
use std::process::Command;

const SPI: u64 = 0x0123_4567_89ab_cdef;

/// Our IKE_SA_INIT request: two proposals (AES-GCM-16-256 / PRF-HMAC-SHA2-256 / Curve25519
/// or P-256; AES-CBC-128 / PRF-HMAC-SHA2-256 / HMAC-SHA2-256-128 / MODP-2048), a
/// Curve25519 KE, a 32-byte nonce and the two NAT detection notifies of RFC 7296
/// section 2.23.
fn sa_init<'a>(ke: &'a [u8], nonce: &'a [u8], nat_s: &'a [u8], nat_d: &'a [u8]) -> Message<'a> {
    Message {
        header: HeaderRepr {
            initiator_spi: SPI,
            responder_spi: 0,
            exchange_type: exchange::IKE_SA_INIT,
            flags: flags::I,
            message_id: 0,
        },
        payloads: vec![
            Payload::Sa(SaPayload {
                proposals: vec![
                    Proposal {
                        number: 1,
                        protocol: protocol::IKE,
                        spi: vec![],
                        transforms: vec![
                            Transform::with_key_length(tt::ENCR, encr::AES_GCM_16, 256),
                            Transform::new(tt::PRF, prf::HMAC_SHA2_256),
                            Transform::new(tt::DH, dh::CURVE25519),
                            Transform::new(tt::DH, dh::ECP_256),
                        ],
                    },
                    Proposal {
                        number: 2,
                        protocol: protocol::IKE,
                        spi: vec![],
                        transforms: vec![
                            Transform::with_key_length(tt::ENCR, encr::AES_CBC, 128),
                            Transform::new(tt::PRF, prf::HMAC_SHA2_256),
                            Transform::new(tt::INTEG, integ::HMAC_SHA2_256_128),
                            Transform::new(tt::DH, dh::MODP_2048),
                        ],
                    },
                ],
            }),
            Payload::Ke(KeyExchange {
                group: dh::CURVE25519,
                data: ke,
            }),
            Payload::Nonce(nonce),
            Payload::Notify(Notify {
                protocol: 0,
                spi: &[],
                kind: notify::NAT_DETECTION_SOURCE_IP,
                data: nat_s,
            }),
            Payload::Notify(Notify {
                protocol: 0,
                spi: &[],
                kind: notify::NAT_DETECTION_DESTINATION_IP,
                data: nat_d,
            }),
        ],
    }
}

/// The RFC 1071 checksum of an IPv4 header.
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// One IPv4/UDP datagram as captured.
struct Datagram<'a> {
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    payload: &'a [u8],
}

/// A pcap file (LINKTYPE_RAW: the packet starts with its IP header) holding the datagrams.
fn pcap(datagrams: &[Datagram<'_>]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for (n, d) in datagrams.iter().enumerate() {
        let udp_len = 8 + d.payload.len();
        let ip_len = 20 + udp_len;
        let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&d.src.0);
        ip.extend_from_slice(&d.dst.0);
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        let c = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        ip.extend_from_slice(&d.src.1.to_be_bytes());
        ip.extend_from_slice(&d.dst.1.to_be_bytes());
        ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        ip.extend_from_slice(d.payload);
        f.extend_from_slice(&(1_700_000_000u32 + n as u32).to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&ip);
    }
    f
}

/// A pcap holding one datagram from 192.0.2.1:500 to 192.0.2.2:500.
fn pcap_udp500(payload: &[u8]) -> Vec<u8> {
    pcap(&[Datagram {
        src: ([192, 0, 2, 1], 500),
        dst: ([192, 0, 2, 2], 500),
        payload,
    }])
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn tshark_decodes_our_ike_sa_init() {
    let ke: Vec<u8> = (0..32).map(|i| 0x40 + i).collect();
    let nonce: Vec<u8> = (0..32).map(|i| 0x80 + i).collect();
    let (nat_s, nat_d) = ([0x11u8; 20], [0x22u8; 20]);
    let m = sa_init(&ke, &nonce, &nat_s, &nat_d);
    let mut bytes = vec![0u8; m.emit_len()];
    m.emit(&mut bytes).unwrap();

    let dir = std::env::temp_dir().join(format!("m6t-ike-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("sa_init.pcap");
    std::fs::write(&pcap, pcap_udp500(&bytes)).unwrap();
    let fields = [
        "isakmp.ispi",
        "isakmp.rspi",
        "isakmp.exchangetype",
        "isakmp.version",
        "isakmp.flag_i",
        "isakmp.length",
        "isakmp.prop.number",
        "isakmp.prop.transforms",
        "isakmp.tf.type",
        "isakmp.tf.id.encr",
        "isakmp.tf.id.prf",
        "isakmp.tf.id.integ",
        "isakmp.tf.id.dh",
        "isakmp.ike2.attr.key_length",
        "isakmp.key_exchange.dh_group",
        "isakmp.key_exchange.data",
        "isakmp.nonce",
        "isakmp.notify.msgtype",
        "isakmp.notify.data",
        "_ws.malformed",
        "_ws.expert.severity",
    ];
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(&pcap);
    cmd.args(["-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd
        .output()
        .expect("tshark not found: run bash scripts/install-deps.sh");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().next().expect("tshark printed no packet");
    let got: Vec<String> = line.split('|').map(|s| s.replace(':', "")).collect();
    assert_eq!(got.len(), fields.len(), "{line}");
    let field = |name: &str| got[fields.iter().position(|f| *f == name).unwrap()].as_str();

    assert_eq!(field("isakmp.ispi"), format!("{SPI:016x}"));
    assert_eq!(field("isakmp.rspi"), "0000000000000000");
    assert_eq!(field("isakmp.exchangetype"), "34");
    assert_eq!(field("isakmp.version"), "0x20");
    assert!(matches!(field("isakmp.flag_i"), "1" | "True"), "{line}");
    assert_eq!(field("isakmp.length"), bytes.len().to_string());
    assert_eq!(field("isakmp.prop.number"), "1,2");
    assert_eq!(field("isakmp.prop.transforms"), "4,4");
    assert_eq!(field("isakmp.tf.type"), "1,2,4,4,1,2,3,4");
    // tshark names each ID by its type's IANA registry: ENCR 20 and 12, PRF 5, INTEG 12,
    // D-H 31, 19 and 14.
    assert_eq!(field("isakmp.tf.id.encr"), "20,12");
    assert_eq!(field("isakmp.tf.id.prf"), "5,5");
    assert_eq!(field("isakmp.tf.id.integ"), "12");
    assert_eq!(field("isakmp.tf.id.dh"), "31,19,14");
    assert_eq!(field("isakmp.ike2.attr.key_length"), "256,128");
    assert_eq!(field("isakmp.key_exchange.dh_group"), "31");
    assert_eq!(field("isakmp.key_exchange.data"), hex(&ke));
    assert_eq!(field("isakmp.nonce"), hex(&nonce));
    assert_eq!(field("isakmp.notify.msgtype"), "16388,16389");
    assert_eq!(
        field("isakmp.notify.data"),
        format!("{},{}", hex(&nat_s), hex(&nat_d))
    );
    assert_eq!(
        field("_ws.malformed"),
        "",
        "tshark calls it malformed: {line}"
    );
    assert_eq!(
        field("_ws.expert.severity"),
        "",
        "tshark has expert warnings: {line}"
    );
}

/// Every Notify type we name, in an INFORMATIONAL message: tshark's IKEv2 table must give
/// each the same name for the same number (issue 11's errors and statuses, RFC 4555's,
/// RFC 5685's, RFC 7383's and RFC 7427's).
#[test]
fn tshark_names_our_notify_types() {
    use m6t_ike::notify as n;
    let named: &[(&str, u16)] = &[
        (
            "UNSUPPORTED_CRITICAL_PAYLOAD",
            n::UNSUPPORTED_CRITICAL_PAYLOAD,
        ),
        ("INVALID_IKE_SPI", n::INVALID_IKE_SPI),
        ("INVALID_MAJOR_VERSION", n::INVALID_MAJOR_VERSION),
        ("INVALID_SYNTAX", n::INVALID_SYNTAX),
        ("INVALID_MESSAGE_ID", n::INVALID_MESSAGE_ID),
        ("INVALID_SPI", n::INVALID_SPI),
        ("NO_PROPOSAL_CHOSEN", n::NO_PROPOSAL_CHOSEN),
        ("INVALID_KE_PAYLOAD", n::INVALID_KE_PAYLOAD),
        ("AUTHENTICATION_FAILED", n::AUTHENTICATION_FAILED),
        ("SINGLE_PAIR_REQUIRED", n::SINGLE_PAIR_REQUIRED),
        ("NO_ADDITIONAL_SAS", n::NO_ADDITIONAL_SAS),
        ("INTERNAL_ADDRESS_FAILURE", n::INTERNAL_ADDRESS_FAILURE),
        ("FAILED_CP_REQUIRED", n::FAILED_CP_REQUIRED),
        ("TS_UNACCEPTABLE", n::TS_UNACCEPTABLE),
        ("INVALID_SELECTORS", n::INVALID_SELECTORS),
        ("UNACCEPTABLE_ADDRESSES", n::UNACCEPTABLE_ADDRESSES),
        ("UNEXPECTED_NAT_DETECTED", n::UNEXPECTED_NAT_DETECTED),
        ("TEMPORARY_FAILURE", n::TEMPORARY_FAILURE),
        ("CHILD_SA_NOT_FOUND", n::CHILD_SA_NOT_FOUND),
        ("INITIAL_CONTACT", n::INITIAL_CONTACT),
        ("SET_WINDOW_SIZE", n::SET_WINDOW_SIZE),
        ("ADDITIONAL_TS_POSSIBLE", n::ADDITIONAL_TS_POSSIBLE),
        ("IPCOMP_SUPPORTED", n::IPCOMP_SUPPORTED),
        ("NAT_DETECTION_SOURCE_IP", n::NAT_DETECTION_SOURCE_IP),
        (
            "NAT_DETECTION_DESTINATION_IP",
            n::NAT_DETECTION_DESTINATION_IP,
        ),
        ("COOKIE", n::COOKIE),
        ("USE_TRANSPORT_MODE", n::USE_TRANSPORT_MODE),
        ("HTTP_CERT_LOOKUP_SUPPORTED", n::HTTP_CERT_LOOKUP_SUPPORTED),
        ("REKEY_SA", n::REKEY_SA),
        (
            "ESP_TFC_PADDING_NOT_SUPPORTED",
            n::ESP_TFC_PADDING_NOT_SUPPORTED,
        ),
        ("NON_FIRST_FRAGMENTS_ALSO", n::NON_FIRST_FRAGMENTS_ALSO),
        ("MOBIKE_SUPPORTED", n::MOBIKE_SUPPORTED),
        ("ADDITIONAL_IP4_ADDRESS", n::ADDITIONAL_IP4_ADDRESS),
        ("ADDITIONAL_IP6_ADDRESS", n::ADDITIONAL_IP6_ADDRESS),
        ("NO_ADDITIONAL_ADDRESSES", n::NO_ADDITIONAL_ADDRESSES),
        ("UPDATE_SA_ADDRESSES", n::UPDATE_SA_ADDRESSES),
        ("COOKIE2", n::COOKIE2),
        ("NO_NATS_ALLOWED", n::NO_NATS_ALLOWED),
        ("REDIRECT_SUPPORTED", n::REDIRECT_SUPPORTED),
        (
            "IKEV2_FRAGMENTATION_SUPPORTED",
            n::IKEV2_FRAGMENTATION_SUPPORTED,
        ),
        ("SIGNATURE_HASH_ALGORITHMS", n::SIGNATURE_HASH_ALGORITHMS),
    ];
    let m = Message {
        header: HeaderRepr {
            initiator_spi: SPI,
            responder_spi: 1,
            exchange_type: exchange::INFORMATIONAL,
            flags: flags::I,
            message_id: 7,
        },
        payloads: named
            .iter()
            .map(|&(_, kind)| {
                Payload::Notify(Notify {
                    protocol: 0,
                    spi: &[],
                    kind,
                    data: &[],
                })
            })
            .collect(),
    };
    let mut bytes = vec![0u8; m.emit_len()];
    m.emit(&mut bytes).unwrap();
    let dir = std::env::temp_dir().join(format!("m6t-ike-tshark-n{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("notifies.pcap");
    std::fs::write(&pcap, pcap_udp500(&bytes)).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-V", "-r"])
        .arg(&pcap)
        .output()
        .expect("tshark not found: run bash scripts/install-deps.sh");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8(out.stdout).unwrap();
    let missing: Vec<String> = named
        .iter()
        .map(|(name, v)| format!("Notify Message Type: {name} ({v})"))
        .filter(|line| !text.contains(line.as_str()))
        .collect();
    assert!(missing.is_empty(), "tshark disagrees: {missing:#?}");
}

/// Every message of full exchanges between our initiator and responder (IKE_SA_INIT,
/// IKE_AUTH, CREATE_CHILD_SA for a second CHILD_SA and an IKE SA rekey, INFORMATIONAL
/// deletes), one capture per cipher, decrypted by tshark from the keys our endpoints give
/// for Wireshark's `ikev2_decryption_table`: the identities, AUTH and traffic selectors
/// inside must show, and no packet may be malformed or fail its integrity check.
#[test]
fn tshark_decrypts_whole_exchanges_with_our_key_log() {
    use m6t_ike::config::{ChildConfig, Identity, IkeConfig, PeerConfig};
    use m6t_ike::endpoint::{Endpoint, IkeEvent};
    use m6t_ike::suite::{ChildSuite, IkeSuite};
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    for suite in ["aes128-sha256-modp2048", "aes256gcm16-prfsha256-curve25519"] {
        let hoa = m6t_ike::ts::prefix("2001:db8:1::10".parse().unwrap(), 128).unwrap();
        let cfg = |me: &str, peer: &str, local, remote| IkeConfig {
            proposals: vec![IkeSuite::parse(suite).unwrap()],
            peers: vec![PeerConfig {
                name: "p".into(),
                local_id: Identity::parse(me),
                remote_id: Identity::parse(peer),
                psk: b"tshark test".to_vec().into(),
                children: ["payload", "second"]
                    .iter()
                    .map(|n| ChildConfig {
                        name: (*n).into(),
                        mode: m6t_ipsec::Mode::Tunnel,
                        local_ts: vec![local],
                        remote_ts: vec![remote],
                        proposals: vec![ChildSuite::parse("aes128-sha256").unwrap()],
                    })
                    .collect(),
            }],
            ..IkeConfig::default()
        };
        let any = m6t_ike::ts::any(true);
        let mut i = Endpoint::new(cfg("mn1@example.org", "ha.example.org", hoa, any), [5; 32]);
        let mut r = Endpoint::new(cfg("ha.example.org", "mn1@example.org", any, hoa), [6; 32]);
        let (mn, ha): (SocketAddr, SocketAddr) = (
            "192.0.2.10:500".parse().unwrap(),
            "198.51.100.1:500".parse().unwrap(),
        );
        let now = Instant::now();
        let mut wire: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut keys = Vec::new();
        let mut pump = |i: &mut Endpoint, r: &mut Endpoint, keys: &mut Vec<String>| loop {
            let mut moved = false;
            while let Some(t) = i.poll_transmit() {
                r.handle(now, ha, mn, &t.payload);
                wire.push((true, t.payload));
                moved = true;
            }
            while let Some(t) = r.poll_transmit() {
                i.handle(now, mn, ha, &t.payload);
                wire.push((false, t.payload));
                moved = true;
            }
            while let Some(e) = i.poll_event() {
                let id = match e {
                    IkeEvent::IkeUp { ike, .. } => Some(ike),
                    IkeEvent::IkeRekeyed { new, .. } => Some(new),
                    _ => None,
                };
                if let Some(k) = id.and_then(|id| i.wireshark_keys(id)) {
                    keys.push(k);
                }
            }
            while r.poll_event().is_some() {}
            if !moved {
                return;
            }
        };
        let id = i.connect(now, "p", mn, ha).unwrap();
        pump(&mut i, &mut r, &mut keys);
        assert!(i.create_child(now, id, "second"));
        pump(&mut i, &mut r, &mut keys);
        assert!(i.rekey_ike(now, id));
        pump(&mut i, &mut r, &mut keys);
        let new_id = i.sas()[0].id;
        i.close(now + Duration::from_secs(1), new_id);
        pump(&mut i, &mut r, &mut keys);
        assert_eq!(
            keys.len(),
            2,
            "{suite}: the first IKE SA and its rekeyed successor"
        );
        // IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA x2, INFORMATIONAL x2 (old SA, new SA).
        assert_eq!(wire.len(), 12, "{suite}");

        let datagrams: Vec<Datagram> = wire
            .iter()
            .map(|(up, p)| {
                let (a, b) = (([192, 0, 2, 10], 500), ([198, 51, 100, 1], 500));
                let (src, dst) = if *up { (a, b) } else { (b, a) };
                Datagram {
                    src,
                    dst,
                    payload: p,
                }
            })
            .collect();
        let dir =
            std::env::temp_dir().join(format!("m6t-ike-tshark-decrypt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.pcap", suite));
        std::fs::write(&file, pcap(&datagrams)).unwrap();
        // Wireshark's UAT syntax: byte fields as bare hex, names quoted, as the key log has them.
        let table: Vec<String> = keys
            .iter()
            .map(|k| format!("uat:ikev2_decryption_table:{k}"))
            .collect();
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(&file);
        for t in &table {
            cmd.args(["-o", t]);
        }
        cmd.args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "isakmp.exchangetype",
        ]);
        cmd.args([
            "-e",
            "isakmp.id.data.fqdn",
            "-e",
            "isakmp.id.type",
            "-e",
            "isakmp.auth.data",
            "-e",
            "isakmp.ts.start_ipv6",
        ]);
        cmd.args(["-e", "_ws.malformed", "-e", "_ws.expert.message"]);
        let out = cmd
            .output()
            .expect("tshark: run bash scripts/install-deps.sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        if std::env::var_os("M6T_KEEP").is_some() {
            std::fs::write(dir.join("keys"), table.join("\n")).unwrap();
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        assert!(out.status.success(), "{suite}: tshark failed: {err}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 12, "{suite}: {text}");
        // IKE_AUTH request and response: identities and AUTH decrypted.
        let f = |n: usize| lines[n].split('|').collect::<Vec<&str>>();
        assert_eq!(f(2)[0], "35", "{suite}: {}", lines[2]);
        // IDi is ID_RFC822_ADDR (3), IDr ID_FQDN (2) with the HA's name; AUTH 32 bytes.
        assert_eq!(f(2)[1], "ha.example.org", "{suite}: IDr: {}", lines[2]);
        assert_eq!(f(2)[2], "3,2", "{suite}: ID types: {}", lines[2]);
        assert_eq!(f(3)[1], "ha.example.org", "{suite}: {}", lines[3]);
        assert_eq!(f(2)[3].len(), 64, "{suite}: AUTH: {}", lines[2]);
        assert_eq!(f(3)[3].len(), 64, "{suite}: {}", lines[3]);
        // CREATE_CHILD_SA: the home address selector inside.
        assert!(
            lines[4].starts_with("36|") && lines[4].contains("2001:db8:1::10"),
            "{suite}: {}",
            lines[4]
        );
        for l in &lines {
            assert!(
                !l.contains("Malformed")
                    && !l.to_lowercase().contains("checksum")
                    && !l.contains("failed"),
                "{suite}: {l}\n{text}"
            );
        }
    }
}
