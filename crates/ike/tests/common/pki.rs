//! A throwaway PKI made with the openssl command (a peer we did not write signs the
//! certificates we must accept): a certification authority and leaf certificates with a
//! subjectAltName, ECDSA P-256 or RSA 2048, in a directory of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Key kind of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// ECDSA P-256.
    Ec,
    /// RSA 2048.
    Rsa,
}

fn newkey(kind: Kind) -> Vec<&'static str> {
    match kind {
        Kind::Ec => vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        Kind::Rsa => vec!["-newkey", "rsa:2048"],
    }
}

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl: run bash scripts/install-deps.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `ca` in `dir` (`ca.pem`, `ca.key`).
pub fn ca(dir: &Path, name: &str, kind: Kind) -> PathBuf {
    let mut a = vec!["req", "-x509", "-nodes", "-days", "30"];
    a.extend(newkey(kind));
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let subj = format!("/CN=m6t test {name}");
    a.extend(["-keyout", &key, "-out", &pem, "-subj", &subj]);
    run(dir, &a);
    dir.join(pem)
}

/// A leaf `name` for `san` (e.g. "DNS:ha.example.org", "email:mn1@example.org") issued by
/// CA `ca`, valid for 30 days from now: its certificate and key.
pub fn leaf(dir: &Path, ca: &str, name: &str, san: &str, kind: Kind) -> (PathBuf, PathBuf) {
    let mut a = vec!["req", "-nodes"];
    a.extend(newkey(kind));
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let subj = format!("/CN={name}");
    a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
    run(dir, &a);
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    let pem = format!("{name}.pem");
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    run(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-extfile",
            &ext,
            "-days",
            "30",
        ],
    );
    (dir.join(pem), dir.join(key))
}

/// A scratch directory removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A new one named after the test and the process.
    pub fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("m6t-ike-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Unix time now, for certificate validity.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
