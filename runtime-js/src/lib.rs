//! eddy's JavaScript engine behind a small interface, so that another engine could take
//! its place: [`prepare`] turns reducer source (JavaScript or TypeScript) into loadable
//! code, and a [`Sandbox`] holds reducers and their per-substream states, folds events
//! into them (and runs pipe mapping functions on events) under time and memory limits,
//! and captures what the code asks of the outside: `console` output, events to append
//! to other streams (`dispatch()`), and outbound HTTP (`request()`) through the
//! embedder's [`Host`], in live calls only.
//!
//! # Layout
//! - `prepare.rs`: parsing with oxc, type stripping, module or expression, `current` reads.
//! - `sandbox.rs`: the QuickJS runtime (rquickjs), limits, folding, mapping, states,
//!   console and dispatches.
//! - `host.rs`: the [`Host`] behind `request()`, and [`Dispatch`].
//! - `convert.rs`: the event object and errors, between Rust and JavaScript.
//! - `driver.js`: the JavaScript side of the sandbox (`console`, `request`, `dispatch`,
//!   the event's clock and random numbers, frozen built-ins, output checks).

mod convert;
mod host;
mod prepare;
mod sandbox;

use std::time::Duration;

pub use host::{Dispatch, Host};
pub use prepare::{Language, Prepared, Shape, prepare};
pub use sandbox::{ConsoleLine, EventIn, Fold, JS_STACK_BYTES, MapCall, Sandbox};

/// Bounds on what reducer code may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Heap of one sandbox (all reducers of one stream share it).
    pub memory_bytes: usize,
    /// Time one call may run before the interrupt handler stops it.
    pub event_time: Duration,
    /// Largest state, as JSON, that a reducer may keep for one substream.
    pub state_bytes: usize,
}

/// Code that cannot be deployed: a syntax error, located in the source as sent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at line {line}, column {column}")]
pub struct CompileError {
    pub message: String,
    /// 1-based.
    pub line: u32,
    /// 1-based, in characters.
    pub column: u32,
}

impl CompileError {
    fn at(source: &str, offset: usize, message: String) -> Self {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or(source);
        let line = before.matches('\n').count() as u32 + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() as u32 + 1;
        Self {
            message,
            line,
            column,
        }
    }

    /// Positions in a source that was wrapped in `( ... \n)` refer to the original: on
    /// the first line, one column to the left.
    fn unwrapped(mut self) -> Self {
        if self.line == 1 {
            self.column = self.column.saturating_sub(1).max(1);
        }
        self
    }
}

/// What went wrong in a call into JavaScript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsErrorKind {
    /// The code threw (or failed to evaluate).
    Thrown,
    /// The call ran past [`Limits::event_time`].
    TimeLimit,
    /// The sandbox ran out of [`Limits::memory_bytes`].
    MemoryLimit,
    /// A checked fold ([`Fold::check_size`]) made a state over [`Limits::state_bytes`].
    StateLimit,
    /// The engine itself failed.
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsError {
    pub kind: JsErrorKind,
    pub message: String,
    /// The JavaScript stack, when the error carried one.
    pub stack: Option<String>,
}

#[cfg(test)]
mod sandbox_frozen_tests;
#[cfg(test)]
mod sandbox_host_tests;
#[cfg(test)]
mod sandbox_tests;
