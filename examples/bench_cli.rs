//! CLI benchmark (release build, one run), issue 31's figures:
//!
//! 1. `eddy send` of N NDJSON lines from a pipe (`cat file | eddy send`) against curl
//!    sending the same lines as `application/x-ndjson`, from the same pipe (`cat file |
//!    curl -T -`, streamed in chunks as eddy send does) and from the file (`curl
//!    --data-binary @file`, with a length), in alternating rounds, each into a stream
//!    of its own; medians and their ratios.
//! 2. `eddy export` of those N events to a file, and `eddy import` of the file into a
//!    fresh server, in events per second.
//!
//! Run: `cargo build --release && cargo run --release -p eddy-server --example
//! bench_cli` (`--lines N`, `--rounds R`; `EDDY_BIN` picks the binary; curl must be on
//! PATH).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Result, bail};

#[path = "bench_common.rs"]
mod common;
use common::*;

fn main() -> Result<()> {
    let mut lines = 1_000_000usize;
    let mut rounds = 3usize;
    number_args(
        "bench_cli",
        &mut [("lines", &mut lines), ("rounds", &mut rounds)],
    )?;
    run_with_eddy(|bin| async move { run(&bin, lines, rounds).await })
}

/// Runs `sh -c script`, answers the seconds it took.
fn timed(script: &str) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("sh").arg("-c").arg(script).output()?;
    if !out.status.success() {
        bail!(
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

async fn run(bin: &Path, lines: usize, rounds: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("lines.ndjson");
    let mut text = String::with_capacity(lines * 120);
    for n in 0..lines {
        text.push_str(&click_json(n % 64, n as u64));
        text.push('\n');
    }
    std::fs::write(&file, &text)?;
    let mb = text.len() as f64 / 1e6;
    drop(text);
    let server = start_eddy(bin, &[]).await?;
    let base = format!("http://127.0.0.1:{}", server.port);
    let (f, b) = (file.display(), bin.display());
    let (mut curl, mut piped, mut send) = (Vec::new(), Vec::new(), Vec::new());
    println!("\n{lines} NDJSON lines ({mb:.1} MB) in one request, {rounds} rounds each:");
    for r in 0..rounds {
        let c = timed(&format!(
            "curl -sS -f -o /dev/null -X POST -H 'Content-Type: application/x-ndjson' \
             -H 'Event-Type: click' --data-binary @{f} {base}/bench/curl{r}"
        ))?;
        let p = timed(&format!(
            "cat {f} | curl -sS -f -o /dev/null -X POST -T - -H 'Content-Type: application/x-ndjson' \
             -H 'Event-Type: click' {base}/bench/piped{r}"
        ))?;
        let s = timed(&format!(
            "cat {f} | EDDY_SERVER={base} {b} send /bench/send{r} --type click 2>/dev/null"
        ))?;
        println!(
            "  round {r}: curl from the file {c:.2} s, curl from a pipe {p:.2} s, eddy send {s:.2} s"
        );
        curl.push(c);
        piped.push(p);
        send.push(s);
    }
    let (c, p, s) = (median(curl), median(piped), median(send));
    println!(
        "  median lines/s: curl from the file {:.0}, curl from a pipe {:.0}, eddy send {:.0}",
        lines as f64 / c,
        lines as f64 / p,
        lines as f64 / s,
    );
    println!(
        "  eddy send: {:.2}x curl from a pipe, {:.2}x curl from the file",
        p / s,
        c / s
    );

    let export = dir.path().join("export.ndjson");
    let e = timed(&format!(
        "EDDY_SERVER={base} {b} export /bench/send0 --output {} 2>/dev/null",
        export.display()
    ))?;
    let fresh = start_eddy(bin, &[]).await?;
    let fresh_base = format!("http://127.0.0.1:{}", fresh.port);
    let i = timed(&format!(
        "EDDY_SERVER={fresh_base} {b} import /bench {} 2>/dev/null",
        export.display()
    ))?;
    println!("\nexport and import of {lines} events:");
    println!(
        "  eddy export   {:>9.0} events/s ({e:.2} s)",
        lines as f64 / e
    );
    println!(
        "  eddy import   {:>9.0} events/s ({i:.2} s, into a fresh server)",
        lines as f64 / i
    );
    Ok(())
}
