//! Prometheus metrics (`metrics_listen` in every daemon's config): what a daemon publishes,
//! its text exposition, and the small HTTP server that answers `GET /metrics`.
//!
//! The data plane never waits for a scrape: the daemon's loop copies its counters into a
//! [`Snapshot`] at most once per [`PUBLISH_EVERY`] (a [`Publisher`] says when), under a
//! mutex nobody else holds for longer than a clone; the server runs on its own thread and
//! only reads that snapshot. Nothing is taken or allocated per packet.
//!
//! Names (the README's "Metrics" section lists them): every drop reason of the machine is
//! `m6t_drops_total{reason="..."}` (the `drop_<reason>` counters of `m6t status`), IPsec's
//! drops `m6t_ipsec_drops_total{reason="..."}` (`ipsec_<reason>`), the driver's failures
//! `m6t_errors_total{kind="..."}` (`<kind>_errors`), and every other counter
//! `m6t_<name>_total`. States, bindings and SAs are gauges; the mobile node's
//! registration time a histogram; `m6t_build_info` and `process_start_time_seconds` say
//! what runs since when.

use m6t_proto::stats::Counter;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often a daemon copies its counters for the metrics server: Prometheus scrapes every
/// 15 s by default, and a second of lag is far below that.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Largest request head the server reads: a scrape's is a few hundred bytes, and a client
/// sending more is not Prometheus.
pub const MAX_REQUEST: usize = 8192;

/// How long the server waits on one client's request or answer before hanging up, so that
/// a stuck client cannot hold the (single) server thread for long.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds of the registration-time histogram, seconds: a registration on a LAN
/// takes well under a millisecond, a retransmitted BU seconds (RFC 6275 section 11.8).
pub const REGISTRATION_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The OpenMetrics content type, served when the client asks for it (Prometheus does).
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic Prometheus text format, served otherwise (curl, promtool, older scrapers).
pub const TEXT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One gauge value a daemon publishes: a state count, a 0/1 flag.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeValue {
    /// Metric name without the `m6t_` prefix (`states`, `bindings`, `registered`).
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// One label (`kind`, `tunnel`, `direction`) and its value, when the gauge has several
    /// series.
    pub label: Option<(&'static str, String)>,
    /// The value.
    pub value: f64,
}

impl GaugeValue {
    /// A gauge without labels.
    pub fn plain(name: &'static str, help: &'static str, value: f64) -> Self {
        GaugeValue {
            name,
            help,
            label: None,
            value,
        }
    }

    /// One series of a labelled gauge.
    pub fn labelled(
        name: &'static str,
        help: &'static str,
        key: &'static str,
        value_of_key: impl Into<String>,
        value: f64,
    ) -> Self {
        GaugeValue {
            name,
            help,
            label: Some((key, value_of_key.into())),
            value,
        }
    }
}

/// What a daemon's loop last published: its counters (the list `m6t status` shows) and
/// its gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Counters by their `m6t status` names.
    pub counters: Vec<Counter>,
    /// Gauges.
    pub gauges: Vec<GaugeValue>,
}

/// The values the server exposes: the last snapshot, the histograms (observed by the
/// daemon where it measures, never per packet), and the process's identity.
#[derive(Debug)]
pub struct Metrics {
    daemon: &'static str,
    snapshot: Mutex<Snapshot>,
    registration: Option<Histogram>,
    start_time: f64,
}

/// The family of a counter by its `m6t status` name: (metric name without `m6t_` and
/// `_total`, its help, and the label that tells the series apart with its value). Public
/// so that the tests find each counter of a status report among the scraped series.
pub fn family_of(name: &str) -> (String, &'static str, Option<(&'static str, &str)>) {
    if let Some(r) = name.strip_prefix("drop_") {
        (
            "drops".into(),
            "Packets dropped by reason (the drop_<reason> counters of m6t status)",
            Some(("reason", r)),
        )
    } else if let Some(r) = name.strip_prefix("ipsec_") {
        (
            "ipsec_drops".into(),
            "Packets IPsec dropped by reason (the ipsec_<reason> counters of m6t status)",
            Some(("reason", r)),
        )
    } else if let Some(k) = name.strip_suffix("_errors") {
        (
            "errors".into(),
            "Failures of the daemon's system calls by kind (the <kind>_errors counters of \
             m6t status)",
            Some(("kind", k)),
        )
    } else {
        (
            name.to_string(),
            "The counter of the same name in m6t status",
            None,
        )
    }
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

impl Metrics {
    /// Metrics of a daemon (`gateway`, `client`, `ha`, `mn`); `registration` when it
    /// measures registration times (the mobile node).
    pub fn new(daemon: &'static str, registration: bool) -> Self {
        Metrics {
            daemon,
            snapshot: Mutex::new(Snapshot::default()),
            registration: registration.then(|| Histogram::new(REGISTRATION_BUCKETS)),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }

    /// Replaces the published snapshot.
    pub fn publish(&self, s: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Records one registration's time (BU sent -> BA received).
    pub fn observe_registration(&self, took: Duration) {
        if let Some(h) = &self.registration {
            h.observe(took.as_secs_f64());
        }
    }

    /// The exposition in the OpenMetrics text format (ends with `# EOF`).
    pub fn openmetrics(&self) -> String {
        // A copy, so that the lock is held for a clone and not for the encoding.
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut reg = Registry::default();
        let info = Family::<Labels, Gauge>::default();
        info.get_or_create(&vec![
            ("version".into(), env!("CARGO_PKG_VERSION").into()),
            ("daemon".into(), self.daemon.into()),
        ])
        .set(1);
        reg.register(
            "m6t_build_info",
            "The m6t version and the daemon running, always 1",
            info,
        );
        let start = FloatGauge::default();
        start.set(self.start_time);
        reg.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            start,
        );
        // Labelled families gather their series first: each is registered once.
        let mut families: Vec<(String, &'static str, Family<Labels, PromCounter>)> = Vec::new();
        for c in &snap.counters {
            let (name, help, label) = family_of(&c.name);
            let counter = match label {
                None => {
                    let one = PromCounter::<u64>::default();
                    one.inc_by(c.value);
                    reg.register(format!("m6t_{name}"), help, one);
                    continue;
                }
                Some((k, v)) => (k, v),
            };
            let i = match families.iter().position(|f| f.0 == name) {
                Some(i) => i,
                None => {
                    families.push((name, help, Family::default()));
                    families.len() - 1
                }
            };
            families[i]
                .2
                .get_or_create(&vec![(counter.0.into(), counter.1.into())])
                .inc_by(c.value);
        }
        for (name, help, f) in families {
            reg.register(format!("m6t_{name}"), help, f);
        }
        let mut gauges: Vec<(&'static str, &'static str, Family<Labels, FloatGauge>)> = Vec::new();
        for g in &snap.gauges {
            let Some((k, v)) = &g.label else {
                let one = FloatGauge::default();
                one.set(g.value);
                reg.register(format!("m6t_{}", g.name), g.help, one);
                continue;
            };
            let i = match gauges.iter().position(|f| f.0 == g.name) {
                Some(i) => i,
                None => {
                    gauges.push((g.name, g.help, Family::default()));
                    gauges.len() - 1
                }
            };
            gauges[i]
                .2
                .get_or_create(&vec![(k.to_string(), v.clone())])
                .set(g.value);
        }
        for (name, help, f) in gauges {
            reg.register(format!("m6t_{name}"), help, f);
        }
        if let Some(h) = &self.registration {
            reg.register(
                "m6t_registration_seconds",
                "Time from a Binding Update sent to its accepting Binding Acknowledgement in \
                 seconds",
                h.clone(),
            );
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }

    /// The exposition in the classic Prometheus text format (0.0.4), for clients that do
    /// not ask for OpenMetrics: the same samples, with a counter's HELP and TYPE under its
    /// `_total` name (where that format looks for them) and no `# EOF`.
    pub fn text(&self) -> String {
        to_classic(&self.openmetrics())
    }
}

/// OpenMetrics text to the classic format, for the metric types this module writes.
pub fn to_classic(om: &str) -> String {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((p, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(&name) {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// What the daemon's loop holds: when to publish next, and where.
#[derive(Debug)]
pub struct Publisher {
    metrics: Arc<Metrics>,
    next: Option<Instant>,
}

impl Publisher {
    /// A publisher whose first [`Self::due`] is true: the server shows real values from the
    /// loop's first pass.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Publisher {
            metrics,
            next: None,
        }
    }

    /// Whether a snapshot is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.map_or(true, |t| now >= t)
    }

    /// Publishes `s`, taken at `now`; the next one is due [`PUBLISH_EVERY`] later.
    pub fn publish(&mut self, now: Instant, s: Snapshot) {
        self.metrics.publish(s);
        self.next = Some(now + PUBLISH_EVERY);
    }

    /// When the loop must wake to publish again (now, before the first).
    pub fn deadline(&self) -> Instant {
        self.next.unwrap_or_else(Instant::now)
    }

    /// The metrics, for the histograms the daemon observes.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Binds `addr` and serves `GET /metrics` from `metrics` on a thread of its own until the
/// process ends. The bind happens here, so a port in use stops the daemon at start.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    // The thread reads requests from the network and needs no privilege: it serves only
    // once the daemon has settled its own, with none.
    m6t_linux::caps::spawn_unprivileged("m6t-metrics", move |dropped| {
        if let Err(e) = dropped {
            tracing::warn!("metrics thread: {e}");
        }
        for conn in listener.incoming() {
            // One client at a time: scrapes are rare and short, and the timeouts bound
            // how long a bad client holds the thread. Failures are the client's.
            match conn {
                Ok(s) => {
                    let _ = answer(s, &metrics);
                }
                // Out of descriptors, say: wait rather than spin on the error.
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })?;
    Ok(local)
}

/// Reads one request head (bounded, timed out) and answers it; the connection closes.
fn answer(mut s: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() >= MAX_REQUEST {
            break false;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    };
    let (status, ctype, body) = if complete {
        respond(&String::from_utf8_lossy(&head), metrics)
    } else {
        (
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".into(),
        )
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(reply.as_bytes())?;
    if !head.starts_with(b"HEAD ") {
        s.write_all(body.as_bytes())?;
    }
    s.flush()
}

/// The status line, content type and body for a request head.
pub fn respond(head: &str, metrics: &Metrics) -> (&'static str, &'static str, String) {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (
            "405 Method Not Allowed",
            "text/plain",
            "only GET /metrics\n".into(),
        );
    }
    if path != "/metrics" {
        return ("404 Not Found", "text/plain", "only GET /metrics\n".into());
    }
    let openmetrics = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    if openmetrics {
        ("200 OK", OPENMETRICS_TYPE, metrics.openmetrics())
    } else {
        ("200 OK", TEXT_TYPE, metrics.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let m = Metrics::new("mn", true);
        m.publish(Snapshot {
            counters: vec![
                Counter {
                    name: "drop_not_registered".into(),
                    value: 3,
                },
                Counter {
                    name: "drop_bad_inner".into(),
                    value: 0,
                },
                Counter {
                    name: "bu_sent".into(),
                    value: 7,
                },
                Counter {
                    name: "udp_send_errors".into(),
                    value: 2,
                },
                Counter {
                    name: "ipsec_esp_bad_icv".into(),
                    value: 5,
                },
            ],
            gauges: vec![
                GaugeValue::plain("registered", "Registered", 1.0),
                GaugeValue::labelled("ipsec_sas", "SAs", "direction", "in", 2.0),
                GaugeValue::labelled("ipsec_sas", "SAs", "direction", "out", 1.0),
            ],
        });
        m.observe_registration(Duration::from_micros(700));
        m
    }

    #[test]
    fn drops_are_one_family_by_reason_and_other_counters_are_named() {
        let t = sample().openmetrics();
        assert!(t.contains("# TYPE m6t_drops counter\n"), "{t}");
        assert!(t.contains("m6t_drops_total{reason=\"not_registered\"} 3\n"));
        assert!(t.contains("m6t_drops_total{reason=\"bad_inner\"} 0\n"));
        assert_eq!(t.matches("# TYPE m6t_drops counter").count(), 1);
        assert!(t.contains("m6t_bu_sent_total 7\n"));
        assert!(t.contains("m6t_errors_total{kind=\"udp_send\"} 2\n"));
        assert!(t.contains("m6t_ipsec_drops_total{reason=\"esp_bad_icv\"} 5\n"));
        assert!(t.contains("# TYPE m6t_registered gauge\nm6t_registered 1.0\n"));
        assert!(t.contains("m6t_ipsec_sas{direction=\"in\"} 2.0\n"));
        assert!(t.contains("m6t_ipsec_sas{direction=\"out\"} 1.0\n"));
        assert!(t.contains(&format!(
            "m6t_build_info{{version=\"{}\",daemon=\"mn\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(t.contains("process_start_time_seconds "));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn registration_histogram_counts_the_observation_in_its_bucket() {
        let t = sample().openmetrics();
        assert!(
            t.contains("# TYPE m6t_registration_seconds histogram\n"),
            "{t}"
        );
        assert!(t.contains("m6t_registration_seconds_count 1\n"));
        assert!(t.contains("m6t_registration_seconds_bucket{le=\"0.0005\"} 0\n"));
        assert!(t.contains("m6t_registration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(t.contains("m6t_registration_seconds_bucket{le=\"+Inf\"} 1\n"));
        // Only the mobile node measures registrations.
        assert!(!Metrics::new("gateway", false)
            .openmetrics()
            .contains("registration"));
    }

    #[test]
    fn classic_format_names_counters_with_total_and_has_no_eof() {
        let t = sample().text();
        assert!(t.contains("# TYPE m6t_drops_total counter\n"), "{t}");
        assert!(t.contains("# HELP m6t_drops_total Packets dropped"));
        assert!(t.contains("# TYPE m6t_registered gauge\n"));
        assert!(!t.contains("# EOF"));
        assert!(!t.contains("# TYPE m6t_drops counter"));
    }

    #[test]
    fn publisher_is_due_at_once_then_every_period() {
        let m = Arc::new(Metrics::new("client", false));
        let mut p = Publisher::new(Arc::clone(&m));
        let t0 = Instant::now();
        assert!(p.due(t0));
        assert!(p.deadline() <= Instant::now());
        let s = Snapshot {
            counters: vec![Counter {
                name: "sent".into(),
                value: 9,
            }],
            gauges: Vec::new(),
        };
        p.publish(t0, s);
        assert!(m.openmetrics().contains("m6t_sent_total 9\n"));
        assert!(!p.due(t0 + PUBLISH_EVERY / 2));
        assert!(p.due(t0 + PUBLISH_EVERY));
        assert_eq!(p.deadline(), t0 + PUBLISH_EVERY);
    }

    #[test]
    fn requests_get_metrics_404_or_405() {
        let m = sample();
        let (s, ty, body) = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert_eq!((s, ty), ("200 OK", TEXT_TYPE));
        assert!(body.contains("m6t_drops_total"));
        let (s, ty, body) = respond(
            "GET /metrics?x=1 HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
            &m,
        );
        assert_eq!((s, ty), ("200 OK", OPENMETRICS_TYPE));
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(respond("GET / HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
    }

    #[test]
    fn server_answers_over_tcp_and_refuses_oversized_requests() {
        // No daemon here to settle its privileges: the server thread may start serving.
        m6t_linux::caps::settled();
        let m = Arc::new(sample());
        let addr = serve("127.0.0.1:0".parse().unwrap(), m).unwrap();
        let get = |req: &[u8]| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(req).unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        };
        let r = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("m6t_bu_sent_total 7"));
        let r = get(b"GET /other HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST, b'a');
        let r = get(&big);
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // A port in use is an error at start.
        assert!(serve(addr, Arc::new(Metrics::new("ha", false))).is_err());
    }
}
