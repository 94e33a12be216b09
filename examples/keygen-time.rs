//! Time the pre-created machine's key generation (src/enroll/keypair.rs) as the release binary
//! would run it: `cargo run --release --example keygen-time -- [N]`. Prints each run and the median.
//! Used for the numbers in docs/private-relay.md (x86_64 and under qemu-aarch64).

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut ms: Vec<f64> = (0..n.max(1))
        .map(|_| {
            let kp = arc_enroll::enroll::keypair::generate().expect("key generation");
            kp.took.as_secs_f64() * 1000.0
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let shown: Vec<String> = ms.iter().map(|m| format!("{m:.0}")).collect();
    println!(
        "RSA-2048 key generation, {} runs: median {:.0} ms, min {:.0} ms, max {:.0} ms (each: {})",
        ms.len(),
        ms[ms.len() / 2],
        ms[0],
        ms[ms.len() - 1],
        shown.join(" ")
    );
}
