//! The server's own streams, under the reserved account `eddy` (API §8):
//! `/eddy/cron('{expr}')`, which ticks on a cron schedule while something follows it,
//! and `/eddy/events({acct})`, the log of every change to an account.
//!
//! Both are stored as ordinary factories of the `eddy` account, so they are read and
//! followed like any stream; only the server appends to them.

pub mod cron;

use crate::error::{EngineError, Result};
use crate::path::{AccountName, Arg, Args, StreamName, StreamPath};

/// The account that holds the builtin streams.
pub const ACCOUNT: &str = "eddy";

/// What a path under `/eddy` names.
#[derive(Debug, Clone)]
pub enum Builtin {
    /// `/eddy/cron('{expr}')`.
    Cron(Box<cron::Schedule>),
    /// `/eddy/events({acct})`.
    Events(AccountName),
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("builtin stream names are valid")
}

fn account() -> AccountName {
    AccountName::new(ACCOUNT).expect("the builtin account name is valid")
}

/// `eddy/events({acct})`: where the changes to `acct` are logged. Every account name
/// reads back as an account argument, so this fails only on a broken invariant (and
/// then never names the plain stream `eddy/events`).
pub fn account_events(acct: &AccountName) -> Result<StreamPath> {
    let args = Args::new(vec![Arg::Account(acct.clone())]).map_err(|e| {
        EngineError::internal(format!("account {acct} has no account event stream: {e}"))
    })?;
    Ok(StreamPath {
        account: account(),
        stream: name("events"),
        args: Some(args),
    })
}

/// `eddy/cron('{expr}')`.
pub fn cron_stream(expr: &str) -> StreamPath {
    StreamPath {
        account: account(),
        stream: name("cron"),
        args: Args::new(vec![Arg::Str(expr.to_owned())]).ok(),
    }
}

/// Tells what a path of the `eddy` account names, refusing the paths that name no
/// builtin stream and malformed cron expressions, with the reason. A path of any other
/// account names none, whatever its stream is called (an account's own `events` or
/// `cron` stream is an ordinary stream of that account).
pub fn builtin(path: &StreamPath) -> Result<Builtin> {
    if path.account.as_str() != ACCOUNT {
        return Err(EngineError::not_found(format!(
            "/{path} is not a builtin stream: those are the eddy account's"
        )));
    }
    let args = path.args.as_ref().map(|a| a.as_slice());
    match (path.stream.as_str(), args) {
        ("cron", Some([Arg::Str(expr)])) => {
            cron::Schedule::parse(expr).map(|s| Builtin::Cron(Box::new(s)))
        }
        ("cron", _) => Err(EngineError::invalid(format!(
            "{path} is not a cron stream: write /eddy/cron('<expression>') with one quoted \
             cron expression, such as /eddy/cron('*/5 * * * *')"
        ))
        .with("field", "expr")),
        ("events", Some([Arg::Account(acct)])) => Ok(Builtin::Events(acct.clone())),
        ("events", Some([Arg::Str(acct)])) => AccountName::new(acct)
            .map(Builtin::Events)
            .map_err(|e| EngineError::invalid(e.to_string()).with("field", "account")),
        ("events", _) => Err(EngineError::invalid(format!(
            "{path} is not an account event stream: write /eddy/events(<account>), such as \
             /eddy/events(acme)"
        ))
        .with("field", "account")),
        _ => Err(EngineError::not_found(format!(
            "/{path} is not a builtin stream; the eddy account holds only \
             /eddy/cron('<expression>') and /eddy/events(<account>)"
        ))),
    }
}

impl crate::Engine {
    /// Keeps the cron stream `path` ticking while the guard lives (`None` when `path`
    /// is not a cron stream), for a pipe from it.
    pub fn keep_ticking(&self, path: &StreamPath) -> Option<cron::CronGuard> {
        if path.account.as_str() != ACCOUNT {
            return None;
        }
        match builtin(path) {
            Ok(Builtin::Cron(schedule)) => self.tickers.acquire(&schedule, false),
            _ => None,
        }
    }

    /// [`Engine::keep_ticking`] for a subscription, which anyone may hold: a 503 when
    /// subscriptions alone keep [`cron::MAX_SUBSCRIBED_TICKERS`] other cron streams
    /// ticking already.
    ///
    /// [`Engine::keep_ticking`]: crate::Engine::keep_ticking
    pub fn keep_ticking_for_subscriber(
        &self,
        path: &StreamPath,
    ) -> crate::error::Result<Option<cron::CronGuard>> {
        if path.account.as_str() != ACCOUNT {
            return Ok(None);
        }
        match builtin(path) {
            Ok(Builtin::Cron(schedule)) => match self.tickers.acquire(&schedule, true) {
                Some(guard) => Ok(Some(guard)),
                None => Err(EngineError::new(
                    crate::error::ErrorCode::Unavailable,
                    format!(
                        "subscriptions keep {} other cron streams ticking already, the most \
                         this server runs for subscribers alone: follow one of those, or pipe \
                         this one into a stream",
                        cron::MAX_SUBSCRIBED_TICKERS
                    ),
                )
                .with("limit", cron::MAX_SUBSCRIBED_TICKERS)),
            },
            _ => Ok(None),
        }
    }
}
