//! A flood of one message kind through the daemons' rate limit: the first BURST lines of a
//! window are logged, the rest only counted and reported as one line when the window ends.
//! `cargo run -p daemonlog --example rate_limit [N]`
use std::time::{Duration, Instant};

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(25);
    let limit = daemonlog::RateLimit::new(daemonlog::BURST, daemonlog::WINDOW);
    let start = Instant::now();
    for i in 0..n {
        // One bad packet every 100 ms: all within one window.
        let now = start + Duration::from_millis(100 * u64::from(i));
        if let Some(before) = limit.check(&"malformed packet", now) {
            if before > 0 {
                println!("{}", daemonlog::summary("malformed packet", before));
            }
            println!("malformed packet #{i}");
        }
    }
    for (what, count) in limit.flush(start + daemonlog::WINDOW * 2) {
        println!("{}", daemonlog::summary(what, count));
    }
}
