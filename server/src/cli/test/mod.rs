//! `eddy test`: folds events through a reducer here, with no server: the server's
//! sandbox, limits and determinism (`Date.now()` is the event's time, `Math.random()`
//! seeded by its id), the event object the server builds (data by content type,
//! `event.args` and one state per substream on a factory), `current` from the reducers
//! `--with` folds alongside (in dependency order, as the server folds a stream's
//! reducers) or the fixed states `--current` gives, and `dispatch()` (printed, not
//! sent). Prints console output,
//! dispatched events and errors as they happen, then the state (a factory's as the
//! server lists it); with `--expect`, compares it and exits 1 on a mismatch.

mod diff;
mod events;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use eddy_runtime_js::{Fold, JsErrorKind, Language, Limits, Sandbox, prepare};
use serde_json::{Value, json};

#[derive(clap::Args)]
#[command(after_help = "Examples:
  eddy test page-counts.js --events clicks.json
  eddy test cart.ts --events cart.ndjson --expect cart.expected.json
  eddy test alerts.js --events readings.json --halt
  eddy export /acme/carts -o carts.ndjson && eddy test cart.ts --events carts.ndjson
  eddy test avg.js --events readings.json --current current.json
  eddy test share.js --events clicks.json --with total.js

The events file is a JSON array of {\"type\", \"data\", \"timestamp\"?, \"id\"?,
\"contentType\"?, \"args\"?} or the same objects one per line (NDJSON), such as the
envelopes of `eddy export`. Events with args are a factory's: one state per substream,
printed as the server lists them ([{\"stream\", \"args\", \"index\", \"state\"}]).
Exit code 0 when the reducer ran (and the state is the expected one), 1 on a mismatch,
when the sandbox's limits stopped an event or when --halt halted, 2 on a usage or file
error.")]
pub struct TestArgs {
    /// The reducer: JavaScript (.js, .mjs) or TypeScript (.ts, .mts).
    reducer: PathBuf,
    /// The events to fold, in order.
    #[arg(long)]
    events: PathBuf,
    /// The state the reducer must end with (a JSON file; a factory's as the server
    /// lists its substreams' states).
    #[arg(long)]
    expect: Option<PathBuf>,
    /// The states of the other reducers the reducer reads through `current`, as a
    /// JSON object `{"name": state}`; fixed for every event and substream.
    #[arg(long)]
    current: Option<PathBuf>,
    /// Another reducer of the stream (named by its file's stem), folded over the same
    /// events before those that read it, so that `current.name` is its live state as
    /// on the server; repeatable.
    #[arg(long = "with", value_name = "FILE")]
    with: Vec<PathBuf>,
    /// Stop at the first event that throws, as a reducer deployed with on-error=halt.
    #[arg(long)]
    halt: bool,
}

/// Runs the test; `Ok(false)` on a mismatch, or when a limit stopped an event.
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
    let name = args
        .reducer
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("reducer")
        .to_owned();
    let events = events::read(&args.events, &name)?;
    let factory = events.first().is_some_and(|e| e.args.is_some());
    // the substreams in the order they first appear (the order in which the server
    // creates them, and lists their states), numbered from 1; a plain stream is 0
    let mut subs: Vec<Substream> = Vec::new();
    let mut sids = Vec::with_capacity(events.len());
    for e in &events {
        let sid = match &e.args {
            None => 0,
            Some(a) => match subs.iter().position(|s| &s.args == a) {
                Some(k) => k as i64 + 1,
                None => {
                    subs.push(Substream {
                        stream: e.stream.clone(),
                        args: a.clone(),
                        index: -1,
                    });
                    subs.len() as i64
                }
            },
        };
        sids.push(sid);
    }
    let mut sandbox =
        Sandbox::new(Limits::default()).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    // the reducers that fold: the one under test (slot 0) and those of --with
    let mut folding = vec![Reducer {
        slot: 0,
        name: name.clone(),
        reads: code.reads.clone(),
    }];
    sandbox
        .load(0, &name, &code)
        .map_err(|e| anyhow::anyhow!("{} does not load: {}", args.reducer.display(), e.message))?;
    for (k, path) in args.with.iter().enumerate() {
        let other = load_with(&mut sandbox, k as u32 + 1, path)?;
        if folding.iter().any(|r| r.name == other.name) {
            bail!(
                "{}: a reducer named {:?} is already given",
                path.display(),
                other.name
            );
        }
        folding.push(other);
    }
    let order = dependency_order(&folding)?;
    let mut fixed: Vec<String> = Vec::new();
    if let Some(path) = &args.current {
        let all: Vec<i64> = if factory {
            (1..=subs.len() as i64).collect()
        } else {
            vec![0]
        };
        let first_slot = folding.len() as u32;
        fixed = current(&mut sandbox, path, &folding, first_slot, &all)?;
    }
    for r in &folding {
        for read in &r.reads {
            if !folding.iter().any(|f| &f.name == read) && !fixed.contains(read) {
                eprintln!(
                    "note: {} reads current.{read}, which is undefined here: give that \
                     reducer with --with, or its state with --current",
                    if r.slot == 0 { "the reducer" } else { &r.name }
                );
            }
        }
    }
    let mut errors = 0;
    let mut stopped = 0;
    let mut halted = false;
    for (e, &sid) in events.iter().zip(&sids) {
        let at = match &e.args {
            None => format!("[{}]", e.index),
            Some(a) => format!("[({a}) {}]", e.index),
        };
        let input = e.input();
        let work: Vec<Fold> = (order.iter())
            .map(|&k| Fold {
                slot: folding[k].slot,
                sid,
                index: e.index,
                event: &input,
                halt_on_error: args.halt && folding[k].slot == 0,
                check_size: true,
                live: false,
            })
            .collect();
        let failed = sandbox.fold(&work);
        // output of the others is named; the reducer under test's is not
        let who = |slot: Option<u32>| match slot {
            Some(s) if s > 0 && (s as usize) < folding.len() => {
                format!("{} ", folding[s as usize].name)
            }
            _ => String::new(),
        };
        for line in sandbox.console() {
            let who = who(line.slot);
            eprintln!("{at} {who}console.{}: {}", line.level, line.message);
        }
        for d in sandbox.dispatches() {
            let who = who(Some(d.slot));
            eprintln!(
                "{at} {who}dispatch to {}: {} {}",
                d.stream, d.event_type, d.data_json
            );
        }
        if sid > 0 {
            subs[sid as usize - 1].index = e.index;
        }
        let mut halt = false;
        for (i, error) in failed {
            let slot = work[i].slot;
            errors += 1;
            if error.kind != JsErrorKind::Thrown {
                stopped += 1;
            }
            eprintln!("{at} {}error: {}", who(Some(slot)), error.message);
            if let Some(stack) = &error.stack {
                eprintln!("{stack}");
            }
            halt |= args.halt && slot == 0;
        }
        if halt {
            halted = true;
            eprintln!(
                "halted at event {} (event {} of {}): the state is the one before it",
                &at[1..at.len() - 1],
                e.at,
                args.events.display()
            );
            break;
        }
    }
    let state = if factory {
        let mut listing = Vec::with_capacity(subs.len());
        for (k, s) in subs.iter().enumerate() {
            listing.push(json!({
                "stream": s.stream,
                "args": s.args,
                "index": s.index,
                "state": state_of(&mut sandbox, k as i64 + 1)?,
            }));
        }
        Value::Array(listing)
    } else {
        state_of(&mut sandbox, 0)?
    };
    println!("{}", serde_json::to_string_pretty(&state)?);
    if errors > 0 {
        eprintln!("{errors} of {} events threw or were stopped", events.len());
    }
    if stopped > 0 {
        eprintln!(
            "{stopped} event{} stopped by the sandbox's limits: on the server each would \
             be skipped with an error in the log",
            if stopped == 1 { " was" } else { "s were" }
        );
    }
    // a halt is a failure, as a deployed reducer that halts is
    let ran = stopped == 0 && !halted;
    let Some(expect) = &args.expect else {
        return Ok(ran);
    };
    let expected: Value = serde_json::from_str(&read(expect)?)
        .with_context(|| format!("{} is not JSON", expect.display()))?;
    let diffs = diff::differences(&expected, &state, factory);
    if diffs.is_empty() {
        eprintln!("the state is the one in {}", expect.display());
        return Ok(ran);
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

/// A factory's substream, as its reducer state listing shows it.
struct Substream {
    stream: String,
    args: String,
    /// The last index folded, -1 before the first.
    index: i64,
}

/// The state reducer 0 keeps for substream `sid`, `null` while it is undefined.
fn state_of(sandbox: &mut Sandbox, sid: i64) -> Result<Value> {
    Ok(
        match sandbox
            .state(0, sid)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?
        {
            Some(json) => serde_json::from_str(&json).context("the state is not JSON")?,
            None => Value::Null,
        },
    )
}

/// A reducer that folds: the one under test (slot 0) or one given with `--with`.
struct Reducer {
    slot: u32,
    name: String,
    reads: Vec<String>,
}

/// Loads the reducer of `path` (named by its file's stem) into `slot`.
fn load_with(sandbox: &mut Sandbox, slot: u32, path: &Path) -> Result<Reducer> {
    let language = match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Language::JavaScript,
        Some("ts" | "mts") => Language::TypeScript,
        _ => bail!(
            "{} is neither JavaScript (.js) nor TypeScript (.ts)",
            path.display()
        ),
    };
    let code =
        prepare(&read(path)?, language).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let name = (path.file_stem().and_then(|s| s.to_str()))
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{} has no name to give its reducer", path.display()))?
        .to_owned();
    sandbox
        .load(slot, &name, &code)
        .map_err(|e| anyhow::anyhow!("{} does not load: {}", path.display(), e.message))?;
    Ok(Reducer {
        slot,
        name,
        reads: code.reads,
    })
}

/// The order in which the reducers fold each event: each after those it reads, as
/// the server orders a stream's reducers; a cycle is refused, as at deploy.
fn dependency_order(reducers: &[Reducer]) -> Result<Vec<usize>> {
    let mut order: Vec<usize> = Vec::with_capacity(reducers.len());
    while order.len() < reducers.len() {
        let ready = (0..reducers.len()).find(|&k| {
            !order.contains(&k)
                && reducers[k].reads.iter().all(|read| {
                    (reducers.iter().position(|r| &r.name == read))
                        .is_none_or(|d| d == k || order.contains(&d))
                })
        });
        let Some(k) = ready else {
            let left: Vec<&str> = (0..reducers.len())
                .filter(|k| !order.contains(k))
                .map(|k| reducers[k].name.as_str())
                .collect();
            bail!(
                "the reducers {} read each other in a cycle (the server refuses such a \
                 deploy)",
                left.join(", ")
            );
        };
        order.push(k);
    }
    Ok(order)
}

/// Gives the reducers the states of `path` (`{"name": state}`) as `current`: each
/// becomes a reducer of that name, in the slots from `first_slot`, holding the state
/// for every substream in `sids`, never folded, so that `current.name` reads it on
/// every event. Answers the names it gave.
fn current(
    sandbox: &mut Sandbox,
    path: &Path,
    folding: &[Reducer],
    first_slot: u32,
    sids: &[i64],
) -> Result<Vec<String>> {
    let given: Value = serde_json::from_str(&read(path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let Value::Object(given) = given else {
        bail!(
            "{} must be a JSON object of reducer names and their states, such as \
             {{\"total\": 3}}",
            path.display()
        );
    };
    let holder =
        prepare("(state) => state", Language::JavaScript).map_err(|e| anyhow::anyhow!("{e}"))?;
    for (k, (other, state)) in given.iter().enumerate() {
        if let Some(r) = folding.iter().find(|r| &r.name == other) {
            bail!(
                "{}: {other:?} is {}",
                path.display(),
                if r.slot == 0 {
                    "the reducer under test"
                } else {
                    "given with --with, which folds it"
                }
            );
        }
        if !folding.iter().any(|r| r.reads.contains(other)) {
            eprintln!(
                "note: no reducer reads current.{other} (eddy sees current.name and \
                 current['name'] in the code)"
            );
        }
        let slot = first_slot + k as u32;
        sandbox
            .load(slot, other, &holder)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let json = state.to_string();
        for &sid in sids {
            sandbox
                .set_state(slot, sid, Some(&json))
                .map_err(|e| anyhow::anyhow!("{}: {other}: {}", path.display(), e.message))?;
        }
    }
    Ok(given.keys().cloned().collect())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
