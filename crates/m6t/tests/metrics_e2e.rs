//! Prometheus metrics with the real consumers, in the lab's namespaces: `promtool check
//! metrics` accepts a running gateway's exposition, and Debian's `prometheus` server,
//! scraping that gateway every second, returns the values `m6t status --json` shows. They
//! need root, like the daemons, and the Debian packages prometheus and curl
//! (scripts/install-deps.sh).

use m6t::status::Report;
use m6t_lab::lab::{Lab, LabOptions, HA, ULA48};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// One lab at a time, as in the other end-to-end tests: they share the CPU.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The gateway's metrics address: its home-side IPv4 address, inside its namespace.
const GW_METRICS: &str = "198.51.100.1:9464";
/// The client's metrics address, in its namespace.
const CLIENT_METRICS: &str = "127.0.0.1:9467";
/// Prometheus's own API, on the gateway namespace's loopback only.
const PROM: &str = "127.0.0.1:19090";

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_m6t"))
}

fn need(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|(_, p)| *p)
        .collect();
    assert!(
        missing.is_empty(),
        "missing Debian packages {missing:?}: run scripts/install-deps.sh"
    );
}

fn counters(r: &Report) -> &[m6t_proto::stats::Counter] {
    match r {
        Report::Gateway { counters, .. } => counters,
        _ => panic!("not a gateway: {r:?}"),
    }
}

/// Every series Prometheus has for `query`, by name and labels (job and instance left
/// out), with its latest value.
fn prom_query(l: &Lab, query: &str) -> BTreeMap<String, f64> {
    let out = l
        .net
        .sh(
            "gw",
            &format!("curl -sfG --max-time 5 http://{PROM}/api/v1/query --data-urlencode 'query={query}'"),
        )
        .unwrap_or_default();
    let mut m = BTreeMap::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
        return m;
    };
    for r in v["data"]["result"].as_array().into_iter().flatten() {
        let Some(metric) = r["metric"].as_object() else {
            continue;
        };
        let mut labels: Vec<String> = metric
            .iter()
            .filter(|(k, _)| !["__name__", "job", "instance"].contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        labels.sort();
        let name = metric["__name__"].as_str().unwrap_or("").to_string();
        let value = r["value"][1].as_str().and_then(|s| s.parse().ok());
        if let Some(value) = value {
            m.insert(format!("{name}{{{}}}", labels.join(",")), value);
        }
    }
    m
}

/// The key [`prom_query`] gives the series of a status counter.
fn series(counter: &str) -> String {
    let (name, _, label) = m6t::metrics::family_of(counter);
    let labels = label.map(|(k, v)| format!("{k}={v}")).unwrap_or_default();
    format!("m6t_{name}_total{{{labels}}}")
}

#[test]
fn prometheus_scrapes_the_gateway_and_returns_what_status_shows() {
    need(&[
        ("prometheus", "prometheus"),
        ("promtool", "prometheus"),
        ("curl", "curl"),
    ]);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut o = LabOptions::new("e2emetrics");
    o.gateway_extra = format!("metrics_listen = \"{GW_METRICS}\"\n");
    // The client too, on its namespace's loopback.
    o.client_extra = format!("metrics_listen = \"{CLIENT_METRICS}\"\n");
    let mut l = Lab::start(bin(), &o).unwrap_or_else(|e| panic!("lab: {e}"));

    // Traffic: forwarded both ways, and drops of one reason made on purpose (the home
    // side sending to a mobile-node address that has no state).
    assert_eq!(l.ping("mn", HA, 3, 56).unwrap().received, 3);
    let nobody = ULA48.replace("::/48", ":1:1::dead");
    let _ = l.ping_raw("ha", &format!("-c 4 -i 0.2 -W 1 {nobody}"));

    // The exposition of the running gateway passes promtool's checks; other paths are 404.
    let text = l
        .net
        .sh(
            "gw",
            &format!("curl -sf --max-time 5 http://{GW_METRICS}/metrics"),
        )
        .unwrap();
    let check = l
        .net
        .sh_output(
            "gw",
            &format!("curl -sf --max-time 5 http://{GW_METRICS}/metrics | promtool check metrics"),
        )
        .unwrap();
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let code = l
        .net
        .sh(
            "gw",
            &format!("curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 http://{GW_METRICS}/"),
        )
        .unwrap();
    assert_eq!(code, "404");
    // What Prometheus gets when it asks for OpenMetrics.
    let om = l
        .net
        .sh(
            "gw",
            &format!("curl -sf --max-time 5 -H 'Accept: application/openmetrics-text; version=1.0.0' http://{GW_METRICS}/metrics"),
        )
        .unwrap();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("m6t_build_info{version="), "{om}");

    // A real Prometheus in the gateway's namespace: its only target is the gateway, its
    // API on the namespace's loopback, its storage in the lab's scratch directory (removed
    // with the lab). Spawned by the lab, so it is stopped even when an assertion fails.
    let dir = l.net.dir.clone();
    let cfg = l
        .net
        .write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: m6t-gateway\n    static_configs:\n      - targets: ['{GW_METRICS}']\n"
            ),
        )
        .unwrap();
    let check = Command::new("promtool")
        .args(["check", "config", &cfg.display().to_string()])
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    l.net
        .spawn(
            "gw",
            "prometheus",
            &[
                "prometheus",
                &format!("--config.file={}", cfg.display()),
                &format!("--storage.tsdb.path={}", dir.join("prometheus").display()),
                &format!("--web.listen-address={PROM}"),
            ],
        )
        .unwrap();

    // Up, and scraping.
    let t = Instant::now();
    loop {
        let p = prom_query(&l, "up");
        if p.get("up{}") == Some(&1.0) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60) && l.net.running("prometheus"),
            "prometheus never scraped the gateway: {p:?}\n{}",
            l.net.log("prometheus")
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Prometheus's values against the status around them: a status taken before, one
    // taken after, with the query in between once the data has had time to get there (the
    // gateway publishes every second, Prometheus scrapes every second). Every counter must
    // lie between the two; a counter that did not move (traffic has stopped, only
    // keep-alives go on) must equal the status.
    let mut last = String::new();
    let t = Instant::now();
    let ok = loop {
        let before = l.gateway().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let p = prom_query(&l, "{__name__=~\"m6t_.*\"}");
        let after = l.gateway().unwrap();
        let mut bad = Vec::new();
        let after_c = counters(&after);
        for (c, a) in counters(&before).iter().zip(after_c) {
            // The two gauges among the status counters are checked below as gauges.
            if c.name == "states" || c.name == "gc_max_pause_us" {
                continue;
            }
            let key = series(&c.name);
            match p.get(&key) {
                Some(v) if *v >= c.value as f64 && *v <= a.value as f64 => {}
                v => bad.push(format!(
                    "{key}: prometheus {v:?}, status {} .. {}",
                    c.value, a.value
                )),
            }
        }
        let states = after.counter("states") as f64;
        let active = p.get("m6t_states{kind=active}").copied();
        let temporary = p.get("m6t_states{kind=temporary}").copied();
        if active.zip(temporary).map(|(a, t)| a + t) != Some(states) {
            bad.push(format!(
                "states {states}: prometheus active {active:?} temporary {temporary:?}"
            ));
        }
        if p.get(&format!(
            "m6t_build_info{{daemon=gateway,version={}}}",
            env!("CARGO_PKG_VERSION")
        )) != Some(&1.0)
        {
            bad.push("m6t_build_info".into());
        }
        if bad.is_empty() {
            break Some((after, p));
        }
        last = bad.join("\n");
        if t.elapsed() > Duration::from_secs(40) {
            break None;
        }
    };
    let Some((status, p)) = ok else {
        panic!("prometheus and m6t status disagree:\n{last}");
    };
    // The values the traffic made are there, not only zeros agreeing with zeros.
    let drops = status.counter("drop_no_state_for_home");
    assert!(drops >= 4, "{drops}");
    assert_eq!(p["m6t_drops_total{reason=no_state_for_home}"], drops as f64);
    assert!(p["m6t_forwarded_to_home_total{}"] >= 3.0);
    assert!(p["m6t_forwarded_to_mn_total{}"] >= 3.0);
    assert_eq!(p["m6t_states{kind=active}"], 1.0);
    assert!(p["m6t_keepalives_answered_total{}"] > 0.0);
    l.net.stop("prometheus");

    // The client's exposition: promtool-clean, its tunnel up and confirmed, its counters
    // those of its status.
    let t = Instant::now();
    loop {
        let c = scrape(&l, "mn", CLIENT_METRICS);
        let r = l.report(&l.client_sock).unwrap();
        let sent = r.counter("sent") as f64;
        if c.get("m6t_tunnel_up") == Some(&1.0)
            && c.get("m6t_tunnel_confirmed") == Some(&1.0)
            && c.get("m6t_sent_total") == Some(&sent)
            && sent >= 3.0
            && c.contains_key("m6t_drops_total{reason=\"tunnel_down\"}")
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{c:?}\n{r:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_metrics_port_in_use_stops_the_daemon_with_one_line() {
    // In a network namespace of its own (unshare), where a listener holds the port first:
    // the gateway binds its metrics port before touching the network, so the error comes
    // first, and whatever happens stays in that namespace.
    need(&[("unshare", "util-linux")]);
    let dir = std::env::temp_dir().join(format!("m6t-metrics-inuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.toml");
    let addr = "127.0.0.1:9464";
    std::fs::write(
        &cfg,
        format!(
            "address = \"fd00::1\"\nha_addresses = [\"fd00::2\"]\nmn_prefixes = [\"fd01::/48\"]\n\
             control_socket = \"{}\"\nmetrics_listen = \"{addr}\"\n",
            dir.join("gw.sock").display()
        ),
    )
    .unwrap();
    let hold = "import socket, subprocess, sys\n\
                s = socket.socket()\n\
                s.bind(('127.0.0.1', 9464))\n\
                s.listen()\n\
                sys.exit(subprocess.run(sys.argv[1:]).returncode)\n";
    let o = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "sh",
        ])
        .args(["/usr/bin/python3", "-c", hold])
        .arg(bin())
        .args(["gateway", "--config", &cfg.display().to_string()])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("metrics_listen {addr}")) && err.contains("in use"),
        "{err}"
    );
}

/// The samples of a classic-format exposition, by series as written (`name{labels}`).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Scrapes `addr` from `role`'s namespace, after checking the exposition with promtool.
fn scrape(l: &Lab, role: &str, addr: &str) -> BTreeMap<String, f64> {
    let o = l
        .net
        .sh_output(
            role,
            &format!("curl -sf --max-time 5 http://{addr}/metrics | promtool check metrics"),
        )
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics ({role}): {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    samples(
        &l.net
            .sh(
                role,
                &format!("curl -sf --max-time 5 http://{addr}/metrics"),
            )
            .unwrap(),
    )
}

#[test]
fn home_agent_and_mobile_node_show_bindings_registrations_and_sas() {
    use m6t_lab::lab::dsmip::{DsmipOptions, LabIpsec};
    need(&[("promtool", "prometheus"), ("curl", "curl")]);
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const HA_METRICS: &str = "127.0.0.1:9465";
    const MN_METRICS: &str = "127.0.0.1:9466";
    let mut l = Lab::build(bin(), &LabOptions::new("e2emetricsds")).unwrap();
    let mut o = DsmipOptions {
        ipsec: Some(LabIpsec::random().unwrap()),
        ..DsmipOptions::default()
    };
    // Top-level keys go before the file's tables: the MN's through its interfaces text,
    // the HA's written in front of its file.
    o.interfaces = format!("metrics_listen = \"{MN_METRICS}\"\n{}", o.interfaces);
    l.write_dsmip_configs(&o).unwrap();
    let ha_toml = l.net.dir.join("ha.toml");
    let text = std::fs::read_to_string(&ha_toml).unwrap();
    std::fs::write(
        &ha_toml,
        format!("metrics_listen = \"{HA_METRICS}\"\n{text}"),
    )
    .unwrap();
    l.start_ha().unwrap();
    l.start_mn().unwrap();
    let m = l.wait_registered("udp", m6t_lab::lab::MN4[0], 0).unwrap();
    assert!(m.registrations >= 1);

    // Published within a second of the registration.
    let t = Instant::now();
    let (mn, info, mn_report) = loop {
        let s = scrape(&l, "mn", MN_METRICS);
        let (info, r) = l.mn_info().unwrap();
        if s.get("m6t_registrations_total") == Some(&(info.registrations as f64)) {
            break (s, info, r);
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{s:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(mn["m6t_registered"], 1.0, "{mn:?}");
    // One observation per registration, in seconds, as the status shows the last one.
    assert_eq!(
        mn["m6t_registration_seconds_count"],
        info.registrations as f64
    );
    assert_eq!(
        mn["m6t_registration_seconds_bucket{le=\"+Inf\"}"],
        info.registrations as f64
    );
    // Milliseconds over 1000 and the seconds the daemon summed differ in the last bit
    // (0.001823171 against 0.0018231710000000002): compare within a nanosecond.
    let last = info.last_registration_ms.unwrap() / 1e3;
    assert!(
        mn["m6t_registration_seconds_sum"] >= last - 1e-9,
        "{mn:?} {last}"
    );
    assert_eq!(mn["m6t_ipsec_sas{direction=\"in\"}"], 1.0, "{mn:?}");
    assert_eq!(mn["m6t_ipsec_sas{direction=\"out\"}"], 1.0, "{mn:?}");
    assert!(mn["m6t_bu_sent_total"] as u64 <= mn_report.counter("bu_sent"));
    assert!(mn.contains_key("m6t_ipsec_drops_total{reason=\"esp_bad_icv\"}"));
    assert!(mn.contains_key("m6t_drops_total{reason=\"not_registered\"}"));

    let ha = scrape(&l, "ha", HA_METRICS);
    let bindings = match l.ha_report().unwrap() {
        Report::HomeAgent { bindings, .. } => bindings.len(),
        r => panic!("{r:?}"),
    };
    assert_eq!(bindings, 1);
    assert_eq!(ha["m6t_bindings{tunnel=\"udp\"}"], 1.0, "{ha:?}");
    assert_eq!(ha["m6t_bindings{tunnel=\"ipv6\"}"], 0.0, "{ha:?}");
    assert_eq!(ha["m6t_ipsec_sas{direction=\"in\"}"], 1.0, "{ha:?}");
    assert!(ha["m6t_bu_accepted_total"] >= 1.0, "{ha:?}");
    assert_eq!(
        ha[&format!(
            "m6t_build_info{{version=\"{}\",daemon=\"ha\"}}",
            env!("CARGO_PKG_VERSION")
        )],
        1.0,
        "{ha:?}"
    );
}
