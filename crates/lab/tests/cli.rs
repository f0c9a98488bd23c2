//! The `m6t-lab` command line, without namespaces. Having an integration test also makes
//! `cargo test --workspace` build the `m6t-lab` binary, which `m6t lab` and `m6t bench` (and
//! so the end-to-end tests in crates/m6t) exec.

use std::process::Command;

#[test]
fn help_lists_lab_and_bench_and_hides_the_tools() {
    let o = Command::new(env!("CARGO_BIN_EXE_m6t-lab"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("lab") && out.contains("bench") && out.contains("soak"),
        "{out}"
    );
    assert!(
        !out.contains("loadgen") && !out.contains("floor") && !out.contains("flood"),
        "{out}"
    );
    for tool in ["loadgen", "floor", "flood"] {
        let o = Command::new(env!("CARGO_BIN_EXE_m6t-lab"))
            .args([tool, "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{tool} --help");
    }
}

#[test]
fn bench_rejects_an_unknown_group_before_building_anything() {
    let o = Command::new(env!("CARGO_BIN_EXE_m6t-lab"))
        .args(["bench", "--only", "tunnel,nonsense"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown group `nonsense`"), "{err}");
}

#[test]
fn soak_rejects_a_short_slot_before_building_anything() {
    let o = Command::new(env!("CARGO_BIN_EXE_m6t-lab"))
        .args(["soak", "--minutes", "1", "--slot", "2"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--slot must be 10 to 3600 seconds"), "{err}");
}
