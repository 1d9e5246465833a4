//! `argon2cost`: what one argon2id password verify costs on this machine, with the same
//! crate (argon2 0.5, RustCrypto) and default parameters as tokengate's user passwords.
//!
//! Every password grant (and every wrong-password attempt) costs one verify, so
//! `cores / verify time` is the physical ceiling for password grants per second, before TLS
//! and HTTP take their share. Measured on 1 thread and on N threads at once (N defaults to
//! the number of cores): memory bandwidth is shared, so N threads rarely give N times 1.

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

const USAGE: &str = "\
Usage: argon2cost [--m-kib 12288] [--t 3] [--p 1] [--iters 40] [--threads N]
Times argon2id verifies (argon2 crate 0.5): --iters verifies on 1 thread, then --iters
verifies on each of N threads at once (N defaults to the number of cores).
Prints one JSON line on stdout, a summary on stderr.
";

const PASSWORD: &[u8] = b"alice-password";

struct Opts {
    m_kib: u32,
    t: u32,
    p: u32,
    iters: u32,
    threads: usize,
}

fn main() -> ExitCode {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let opts = match parse(std::env::args().skip(1), cores) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("argon2cost: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match measure(&opts, cores) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("argon2cost: {e}");
            ExitCode::from(1)
        }
    }
}

fn parse(mut it: impl Iterator<Item = String>, cores: usize) -> Result<Option<Opts>, String> {
    let mut opts = Opts {
        m_kib: 12288,
        t: 3,
        p: 1,
        iters: 40,
        threads: cores,
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_| format!("{flag} needs a whole number, got {value:?}");
        match flag.as_str() {
            "--m-kib" => opts.m_kib = value.parse().map_err(bad)?,
            "--t" => opts.t = value.parse().map_err(bad)?,
            "--p" => opts.p = value.parse().map_err(bad)?,
            "--iters" => opts.iters = value.parse().map_err(bad)?,
            "--threads" => opts.threads = value.parse().map_err(bad)?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if opts.iters == 0 || opts.iters > 10_000 || opts.threads == 0 || opts.threads > 256 {
        return Err("need 1 <= iters <= 10000 and 1 <= threads <= 256".into());
    }
    Ok(Some(opts))
}

fn measure(opts: &Opts, cores: usize) -> Result<(), String> {
    let params =
        Params::new(opts.m_kib, opts.t, opts.p, None).map_err(|e| format!("argon2 params: {e}"))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    // A fixed salt is fine: the cost of a verify does not depend on the salt's value.
    let salt = SaltString::encode_b64(b"tokengate-bench!").map_err(|e| format!("salt: {e}"))?;
    let phc = hasher
        .hash_password(PASSWORD, &salt)
        .map_err(|e| format!("hash: {e}"))?
        .to_string();
    let phc: Arc<str> = Arc::from(phc);

    verify_n(&phc, 2)?; // warm-up: page in the memory blocks once
    let started = Instant::now();
    verify_n(&phc, opts.iters)?;
    let single_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(opts.iters);

    // All threads start together, so the wall time is that of concurrent verifies.
    let barrier = Arc::new(Barrier::new(opts.threads + 1));
    let handles: Vec<_> = (0..opts.threads)
        .map(|_| {
            let (phc, barrier, iters) = (phc.clone(), barrier.clone(), opts.iters);
            thread::spawn(move || {
                barrier.wait();
                verify_n(&phc, iters)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    for handle in handles {
        handle.join().map_err(|_| "a verify thread panicked")??;
    }
    let wall_s = started.elapsed().as_secs_f64();
    let total = f64::from(opts.iters) * opts.threads as f64;
    let parallel_per_s = total / wall_s;
    let limit_per_s = cores as f64 * 1000.0 / single_ms;

    let r2 = |x: f64| (x * 100.0).round() / 100.0;
    println!(
        "{}",
        serde_json::json!({
            "impl": "argon2 0.5 (RustCrypto)",
            "m_kib": opts.m_kib, "t": opts.t, "p": opts.p,
            "iters_per_thread": opts.iters,
            "single_thread_ms_per_verify": r2(single_ms),
            "single_thread_verifies_per_s": r2(1000.0 / single_ms),
            "threads": opts.threads,
            "parallel_verifies_per_s": r2(parallel_per_s),
            "parallel_ms_per_verify": r2(wall_s * 1000.0 / f64::from(opts.iters)),
            "cores": cores,
            "limit_per_s": r2(limit_per_s),
        })
    );
    eprintln!(
        "argon2id m={} KiB t={} p={}: {single_ms:.2} ms per verify on 1 thread; \
         {parallel_per_s:.1} verifies/s on {} threads; limit {cores} cores / verify time = \
         {limit_per_s:.1} password grants/s",
        opts.m_kib, opts.t, opts.p, opts.threads
    );
    Ok(())
}

/// `n` verifies the way the server does them: parse the stored PHC string, then verify.
fn verify_n(phc: &str, n: u32) -> Result<(), String> {
    for _ in 0..n {
        let hash = PasswordHash::new(phc).map_err(|e| format!("parse hash: {e}"))?;
        Argon2::default()
            .verify_password(PASSWORD, &hash)
            .map_err(|e| format!("verify: {e}"))?;
    }
    Ok(())
}
