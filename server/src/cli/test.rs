//! `eddy test`: folds events through a reducer here, with no server: the server's
//! sandbox, limits and determinism (`Date.now()` is the event's time, `Math.random()`
//! seeded by its id), `current` (empty: no other reducer runs) and `dispatch()`
//! (printed, not sent). Prints console output, dispatched events and errors as they
//! happen, then the state; with `--expect`, compares it and exits 1 on a mismatch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use eddy_runtime_js::{EventIn, Fold, Language, Limits, Sandbox, prepare};
use serde_json::Value;

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy test page-counts.js --events clicks.json
  eddy test cart.ts --events cart.ndjson --expect cart.expected.json
  eddy test alerts.js --events readings.json --halt

The events file is a JSON array of {\"type\", \"data\", \"timestamp\"?} or the same
objects one per line (NDJSON). Exit code 0 when the reducer ran (and the state is the
expected one), 1 on a mismatch, 2 on a usage or file error.")]
pub struct TestArgs {
    /// The reducer: JavaScript (.js, .mjs) or TypeScript (.ts, .mts).
    reducer: PathBuf,
    /// The events to fold, in order.
    #[arg(long)]
    events: PathBuf,
    /// The state the reducer must end with (a JSON file).
    #[arg(long)]
    expect: Option<PathBuf>,
    /// Stop at the first event that throws, as a reducer deployed with on-error=halt.
    #[arg(long)]
    halt: bool,
}

/// Runs the test; `Ok(false)` on a mismatch.
pub fn run(args: &TestArgs) -> Result<bool> {
    let language = match args.reducer.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Language::JavaScript,
        Some("ts" | "mts") => Language::TypeScript,
        _ => bail!(
            "{} is neither JavaScript (.js) nor TypeScript (.ts)",
            args.reducer.display()
        ),
    };
    let source = read(&args.reducer)?;
    let code = prepare(&source, language)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.reducer.display()))?;
    let events = events(&args.events)?;
    let name = args
        .reducer
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("reducer")
        .to_owned();
    let mut sandbox =
        Sandbox::new(Limits::default()).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    sandbox
        .load(0, &name, &code)
        .map_err(|e| anyhow::anyhow!("{} does not load: {}", args.reducer.display(), e.message))?;
    let data: Vec<String> = events.iter().map(|e| e["data"].to_string()).collect();
    // an event's own id and time when the file gives them (as an export does), so
    // that `Math.random()` and `Date.now()` are the server's
    let ids: Vec<String> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e["id"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("00000000-0000-7000-8000-{i:012}"))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut times = Vec::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        times.push(match &e["timestamp"] {
            Value::Number(n) => n.as_i64().unwrap_or(now),
            Value::String(t) => eddy_engine::event::parse_timestamp("timestamp", t)
                .map_err(|err| anyhow::anyhow!("event {i}: {}", err.message))?,
            _ => now,
        });
    }
    let stream = format!("test/{name}");
    let mut errors = 0;
    for (i, e) in events.iter().enumerate() {
        let input = EventIn {
            stream: &stream,
            index: i as i64,
            id: &ids[i],
            event_type: e["type"].as_str().unwrap_or("event"),
            timestamp: times[i],
            content_type: "application/json",
            data_json: &data[i],
            encoding: None,
            args_json: None,
        };
        let fold = Fold {
            slot: 0,
            sid: 0,
            index: i as i64,
            event: &input,
            halt_on_error: args.halt,
            check_size: true,
            live: false,
        };
        let failed = sandbox.fold(&[fold]);
        for line in sandbox.console() {
            eprintln!("[{i}] console.{}: {}", line.level, line.message);
        }
        for d in sandbox.dispatches() {
            eprintln!(
                "[{i}] dispatch to {}: {} {}",
                d.stream, d.event_type, d.data_json
            );
        }
        if let Some((_, error)) = failed.into_iter().next() {
            errors += 1;
            eprintln!("[{i}] error: {}", error.message);
            if let Some(stack) = &error.stack {
                eprintln!("{stack}");
            }
            if args.halt {
                eprintln!("halted at event {i}: the state is the one before it");
                break;
            }
        }
    }
    let state = match sandbox
        .state(0, 0)
        .map_err(|e| anyhow::anyhow!("{}", e.message))?
    {
        Some(json) => serde_json::from_str(&json).context("the state is not JSON")?,
        None => Value::Null,
    };
    println!("{}", serde_json::to_string_pretty(&state)?);
    if errors > 0 {
        eprintln!("{errors} of {} events threw", events.len());
    }
    let Some(expect) = &args.expect else {
        return Ok(true);
    };
    let expected: Value = serde_json::from_str(&read(expect)?)
        .with_context(|| format!("{} is not JSON", expect.display()))?;
    let mut diffs = Vec::new();
    diff("state", &expected, &state, &mut diffs);
    if diffs.is_empty() {
        eprintln!("the state is the one in {}", expect.display());
        return Ok(true);
    }
    eprintln!(
        "the state is not the one in {} ({} difference{}):",
        expect.display(),
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" }
    );
    for d in diffs.iter().take(50) {
        eprintln!("  {d}");
    }
    Ok(false)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The events of a JSON array file, or of an NDJSON one.
fn events(path: &Path) -> Result<Vec<Value>> {
    let text = read(path)?;
    if let Ok(Value::Array(events)) = serde_json::from_str(&text) {
        return Ok(events);
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {} is not JSON", path.display(), n + 1))
        })
        .collect()
}

/// The differences between `expected` and `got`, one line each, named by their path.
/// (Written here rather than taken from a diff crate: JSON values compare by path in a
/// dozen lines, and a path names a difference better than lines of text do.)
fn diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                match g.get(k) {
                    Some(gv) => diff(&format!("{path}.{k}"), ev, gv, out),
                    None => out.push(format!("{path}.{k}: expected {ev}, missing")),
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: not expected, got {gv}"));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), ev, gv, out);
            }
        }
        (e, g) if e != g => out.push(format!("{path}: expected {e}, got {g}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn differences_are_named_by_their_path() {
        let mut out = Vec::new();
        super::diff(
            "state",
            &json!({"total": 3, "pages": {"/": 2, "/a": 1}, "list": [1, 2]}),
            &json!({"total": 4, "pages": {"/": 2, "/b": 1}, "list": [1, 3]}),
            &mut out,
        );
        assert_eq!(
            out,
            [
                "state.total: expected 3, got 4",
                "state.pages./a: expected 1, missing",
                "state.pages./b: not expected, got 1",
                "state.list[1]: expected 2, got 3",
            ]
        );
    }
}
