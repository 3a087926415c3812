//! Micro-benchmarks of the circuit breaker: `try_acquire` + `success` while
//! closed (one thread, two threads contending; with the default settings,
//! where the closed path takes no lock, and with a failure-rate rule, whose
//! window is updated under the lock on every success) and a rejected call
//! while open. Prints ns/op. Run: `cargo bench --bench breaker`.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use resilient_redis::{BreakerConfig, CircuitBreaker, FailureRate, SystemClock};

const OPS: u64 = 5_000_000;

fn closed_breaker(rate: bool) -> CircuitBreaker {
    let config = BreakerConfig {
        failure_rate: rate.then(FailureRate::default),
        ..BreakerConfig::default()
    };
    CircuitBreaker::new(config, SystemClock::shared())
}

fn label(rate: bool) -> &'static str {
    if rate {
        "closed+rate"
    } else {
        "closed"
    }
}

fn report(name: &str, ops: u64, elapsed: Duration) {
    let ns = elapsed.as_nanos() as f64 / ops as f64;
    println!("{name:<44} {ns:>8.1} ns/op  ({:.1} M ops/s)", 1e3 / ns);
}

fn closed_single(rate: bool) {
    let b = closed_breaker(rate);
    let start = Instant::now();
    for _ in 0..OPS {
        if let Ok(p) = black_box(&b).try_acquire() {
            black_box(p.success());
        }
    }
    report(
        &format!("{}: try_acquire + success, 1 thread", label(rate)),
        OPS,
        start.elapsed(),
    );
}

fn closed_contended(threads: u64, rate: bool) {
    let b = Arc::new(closed_breaker(rate));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let b = b.clone();
            thread::spawn(move || {
                for _ in 0..OPS {
                    if let Ok(p) = black_box(&*b).try_acquire() {
                        black_box(p.success());
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    // Wall time per operation of one thread (each did OPS).
    report(
        &format!("{}: try_acquire + success, {threads} threads", label(rate)),
        OPS,
        start.elapsed(),
    );
}

fn open_rejection() {
    let config = BreakerConfig {
        failure_threshold: 1,
        open_timeout: Duration::from_secs(3600),
        ..BreakerConfig::default()
    };
    let b = CircuitBreaker::new(config, SystemClock::shared());
    if let Ok(p) = b.try_acquire() {
        p.failure();
    }
    let start = Instant::now();
    for _ in 0..OPS {
        black_box(black_box(&b).try_acquire().is_err());
    }
    report("open: rejected try_acquire, 1 thread", OPS, start.elapsed());
}

fn main() {
    // One warm-up pass, then the measured one.
    for round in 0..2 {
        let label = if round == 0 { "warm-up" } else { "measured" };
        println!("breaker, {label} ({OPS} ops per thread per case)");
        closed_single(false);
        closed_contended(2, false);
        open_rejection();
        closed_single(true);
        closed_contended(2, true);
    }
}
