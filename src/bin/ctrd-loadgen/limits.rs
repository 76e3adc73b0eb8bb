//! The physical limits the daemon figures are read against: a unix-socket round trip (the
//! floor for any call) and single-core sha256 (the ceiling for any verified ingest), measured
//! on this machine with the same `sha2` crate ctrd hashes with.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use sha2::{Digest as _, Sha256};

/// `rounds` 64-byte ping-pongs over a socket pair to an echo thread; one JSON line.
pub fn rtt(rounds: usize) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 || b.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut buf = [0u8; 64];
    let start = Instant::now();
    for _ in 0..rounds {
        a.write_all(&[1u8; 64]).expect("write");
        a.read_exact(&mut buf).expect("read");
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    drop(a);
    let _ = echo.join();
    println!(
        "{{\"rtt_us\": {us:.2}, \"round_trips_per_s\": {:.0}}}",
        1e6 / us
    );
}

/// Bytes hashed per `update`, as an ingest hashes one 1 MiB WRITE at a time.
const BLOCK: usize = 1 << 20;

/// Five passes, each hashing `mib` MiB in 1 MiB updates on this thread; the median pass in
/// MiB/s, one JSON line.
pub fn sha256(mib: usize) {
    let block: Vec<u8> = (0..BLOCK).map(|i| (i * 131 % 251) as u8).collect();
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            let mut hasher = Sha256::new();
            for _ in 0..mib {
                hasher.update(&block);
            }
            std::hint::black_box(hasher.finalize());
            mib as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "{{\"mib\": {mib}, \"passes\": 5, \"sha256_mib_per_s\": {:.0}}}",
        rates[2]
    );
}

/// Serves a bare gRPC server on the unix socket `socket` until killed: one completion queue,
/// no service registered, the default channel arguments. Whatever ctrd holds idle beyond
/// this process is ctrd's own.
pub fn floor(socket: &str) {
    let _ = std::fs::remove_file(socket);
    let env = std::sync::Arc::new(grpcio::EnvBuilder::new().cq_count(1).build());
    let mut server = grpcio::ServerBuilder::new(env)
        .build()
        .unwrap_or_else(|err| fail(&format!("build the floor server: {err}")));
    server
        .add_listening_port(
            format!("unix:{socket}"),
            grpcio::ServerCredentials::insecure(),
        )
        .unwrap_or_else(|err| fail(&format!("listen on {socket}: {err}")));
    server.start();
    loop {
        std::thread::park();
    }
}

fn fail(message: &str) -> ! {
    eprintln!("ctrd-loadgen: {message}");
    std::process::exit(1)
}
