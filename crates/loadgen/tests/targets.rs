//! The generator sends load to this machine only.

use std::process::Command;

#[test]
fn refuses_any_target_but_loopback() {
    let refused = Command::new(env!("CARGO_BIN_EXE_pairgate-loadgen"))
        .args(["--url", "ws://192.0.2.1:18789/", "--token", "t"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("loopback addresses only"), "{stderr}");
}
