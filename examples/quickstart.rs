//! Loads the configuration from the environment and prints it, redacted.
//!
//! ```text
//! cargo run --example quickstart
//! REDIS_URL=redis://:secret@127.0.0.1:6379 cargo run --example quickstart
//! ```

use resilient_redis::Config;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    if config.is_memory_only() {
        println!("REDIS_URL is not set: running on the in-memory fallback only.");
    }
    println!("effective configuration:\n{config}");
}
