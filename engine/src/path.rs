//! Owns eddy's URL path grammar: it percent-decodes a request path, splits it into
//! account, stream, factory arguments and trailing parts, validates every name, and
//! renders stream paths back in their canonical and URL forms.
//!
//! | URL | resource |
//! | --- | --- |
//! | `/{acct}` | [`Resource::Account`] |
//! | `/{acct}/{strm}` and `/{acct}/{strm}({args})` | [`Resource::Stream`] |
//! | `/{acct}/{strm}@{n}` (a replaced history, read-only) | [`Resource::Stream`] |
//! | `…/{index}` or `…[{index}]` | [`Resource::Event`] |
//! | `….{reducer}` | [`Resource::Reducer`] |
//! | `…:{eventType}[.json\|.ts]` | [`Resource::EventType`] |
//! | `…/pipe/{acct2}/{strm2}` | [`Resource::Pipe`] |
//! | `…/logs`, `…/logs/pipe/{acct2}/{strm2}` | [`Resource::Logs`], [`Resource::PipeLogs`] |
//! | `…/settings`, `…/substreams`, `…/reducers`, `…/pipes`, `…/types` | [`Resource::Settings`], [`Resource::Substreams`], [`Resource::Reducers`], [`Resource::Pipes`], [`Resource::Types`] |
//! | `…/webhooks`, `…/webhooks/{id}`, `…/webhooks/{id}/resume`, `…/pause`, `…/replay` | [`Resource::Webhooks`], [`Resource::Webhook`], [`Resource::WebhookResume`], [`Resource::WebhookPause`], [`Resource::WebhookReplay`] |
//! | `…/splices`, `…/splices/{id}`, `…/splices/{id}/approve` | [`Resource::Splices`], [`Resource::Splice`], [`Resource::SpliceApprove`] |
//!
//! The whole path is percent-decoded before it is parsed, and the scanner is
//! quote-aware inside factory arguments, so `/a/s('x/y').r` names the substream
//! `s('x/y')` and its reducer `r`. Factory arguments are JavaScript primitives; their
//! canonical form uses single-quoted strings and JavaScript's shortest number format,
//! and re-parsing a canonical form gives it back unchanged.

use std::fmt::{self, Write as _};
use std::iter::Peekable;
use std::str::Chars;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// The longest accepted path, in bytes after percent-decoding, leading slash included.
pub const MAX_PATH_LEN: usize = 2048;
/// The longest account name, stream name, reducer name or webhook id, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// The most factory arguments a substream may carry.
pub const MAX_ARGS: usize = 16;
/// The longest canonical argument list, in bytes: small enough that the canonical
/// form of every stream path (`/acct/strm(args)`) fits in [`MAX_PATH_LEN`].
pub const MAX_ARGS_LEN: usize = MAX_PATH_LEN - 2 * MAX_NAME_LEN - 4;
/// The longest event type, in characters.
pub const MAX_EVENT_TYPE_LEN: usize = 100;

const RESERVED_ACCOUNTS: [&str; 7] = ["eddy", "api", "ui", "ws", "auth", "healthz", "metrics"];
const FORBIDDEN_STREAMS: [&str; 3] = ["this", "dispatch", "request"];
const NAME_RULE: &str = "may only contain A-Z a-z 0-9 _ - (1 to 64 characters)";

/// Bytes that [`StreamPath::url`] percent-encodes in factory arguments: everything
/// except ASCII alphanumerics and `' ( ) , * - _ . ~ ! $ & + ; = : @`.
const ARG_ESCAPES: &AsciiSet = &{
    let keep = b"'(),*-_.~!$&+;=:@";
    let mut set = NON_ALPHANUMERIC.remove(keep[0]);
    let mut i = 1;
    while i < keep.len() {
        set = set.remove(keep[i]);
        i += 1;
    }
    set
};

/// A path that does not follow the grammar; its message suits an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PathError {
    /// One sentence naming the part of the path at fault and its value.
    pub message: String,
}

/// Builds a [`PathError`] from a format string.
macro_rules! path_error {
    ($($arg:tt)*) => { PathError { message: format!($($arg)*) } };
}

/// Returns a [`PathError`] built from a format string.
macro_rules! bail {
    ($($arg:tt)*) => { return Err(path_error!($($arg)*)) };
}

/// Quotes a user-supplied value for an error message, shortening it past 64 characters.
fn show(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}", format!("{}…", &value[..end])),
        None => format!("{value:?}"),
    }
}

fn is_name(s: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_name(what: &str, s: &str) -> Result<(), PathError> {
    if !is_name(s) {
        bail!("{what} {} {NAME_RULE}", show(s));
    }
    Ok(())
}

/// Declares a validated name type with `new`, `as_str` and `Display`.
macro_rules! name_type {
    ($(#[$attr:meta])* $name:ident, $what:literal, $($forbidden:expr)? $(; $rule:path)?) => {
        $(#[$attr])*
        pub struct $name(String);

        impl $name {
            #[doc = concat!("Checks `name` against the ", $what, " rules and wraps it.")]
            pub fn new(name: &str) -> Result<Self, PathError> {
                check_name($what, name)?;
                $(if $forbidden.contains(&name) {
                    bail!("{} {} is reserved", $what, show(name));
                })?
                $($rule(name)?;)?
                Ok(Self(name.to_owned()))
            }

            /// Returns the name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// An account name: 1 to 64 characters from `A-Z a-z 0-9 _ -` that a factory
    /// argument reads back as the account (not `123`, `1e5`, `null`...).
    #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
    AccountName, "account name", ; check_account_arg
);

name_type!(
    /// A stream name: 1 to 64 characters from `A-Z a-z 0-9 _ -`, other than `this`,
    /// `dispatch` and `request`.
    #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
    StreamName, "stream name", FORBIDDEN_STREAMS
);

impl StreamName {
    /// `strm@{n}`: the name version `n` of this stream's history is kept under once a
    /// splice replaced it, a name no client can give a stream of its own.
    pub fn version(&self, n: u64) -> StreamName {
        StreamName(format!("{}@{n}", self.0))
    }
}

name_type!(
    /// A reducer name: 1 to 64 characters from `A-Z a-z 0-9 _ -`.
    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    ReducerName, "reducer name",
);

/// Refuses an account name that a bare factory argument would read as something else:
/// `strm(123)` is the number 123 and `strm(null)` is null in every factory, so such an
/// account could never name its account substreams, `/eddy/events({acct})` among them.
fn check_account_arg(name: &str) -> Result<(), PathError> {
    if matches!(bare(name), Ok(Arg::Account(_))) {
        return Ok(());
    }
    if ["true", "false", "null", "undefined"].contains(&name) {
        bail!(
            "account name {} is a keyword in factory arguments (strm({name}) is not the \
             account), so it could not name its account substreams; choose a name that is \
             not true, false, null or undefined",
            show(name)
        );
    }
    bail!(
        "account name {} reads as a number in factory arguments (strm({name}) is not the \
         account), so it could not name its account substreams; give the name a letter or \
         underscore that keeps it from reading as a number (e.g. \"a{name}\")",
        show(name)
    )
}

impl AccountName {
    /// Tells whether the name is one the server keeps for itself (`eddy`, `api`, `ui`,
    /// `ws`, `auth`, `healthz`, `metrics`), in any case (`EDDY` would pass for the
    /// builtin account at a glance); the parser accepts such names anyway.
    pub fn is_reserved(&self) -> bool {
        RESERVED_ACCOUNTS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&self.0))
    }
}

/// One factory argument: a JavaScript primitive or a bare account name.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A string literal.
    Str(String),
    /// A finite number.
    Num(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A bare account name, which makes an account substream.
    Account(AccountName),
}

/// Writes the canonical literal: `'str'`, JavaScript's shortest number, `true`,
/// `false`, `null` or the account name.
impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Str(s) => {
                f.write_char('\'')?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\'' => f.write_str("\\'")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c < ' ' || c == '\x7f' => write!(f, "\\x{:02x}", u32::from(c))?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('\'')
            }
            Arg::Num(n) => f.write_str(ryu_js::Buffer::new().format(*n)),
            Arg::Bool(b) => write!(f, "{b}"),
            Arg::Null => f.write_str("null"),
            Arg::Account(a) => f.write_str(a.as_str()),
        }
    }
}

/// A non-empty list of at most 16 factory arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Args(Vec<Arg>);

impl Args {
    /// The arguments as a JSON array, as reducers see them in `event.args`: strings,
    /// numbers, booleans and null as themselves, an account argument as its name.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        Value::Array(
            self.0
                .iter()
                .map(|a| match a {
                    Arg::Str(s) => Value::String(s.clone()),
                    Arg::Num(n) => {
                        serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
                    }
                    Arg::Bool(b) => Value::Bool(*b),
                    Arg::Null => Value::Null,
                    Arg::Account(a) => Value::String(a.to_string()),
                })
                .collect(),
        )
    }

    /// Args from a JSON array of strings, numbers, booleans and null, as a pipe
    /// function's output or an `eddy test` fixture gives them (the inverse of
    /// [`Args::to_json`]; a string is a string argument, never an account).
    pub fn from_json(values: &[serde_json::Value]) -> Result<Self, String> {
        use serde_json::Value;
        let args = values
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(Arg::Str(s.clone())),
                Value::Number(n) => n
                    .as_f64()
                    .map(Arg::Num)
                    .ok_or_else(|| format!("args value {n} is not a finite number")),
                Value::Bool(b) => Ok(Arg::Bool(*b)),
                Value::Null => Ok(Arg::Null),
                other => Err(format!(
                    "args must hold strings, numbers, booleans or null, not {other}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(args).map_err(|e| format!("args are not valid: {e}"))
    }

    /// Wraps a list built in code, checking what [`Args::parse`] guarantees: 1 to 16
    /// arguments, finite numbers, account arguments that would not read back as a
    /// number or keyword, and a canonical form of at most [`MAX_ARGS_LEN`] bytes.
    pub fn new(args: Vec<Arg>) -> Result<Self, PathError> {
        if args.is_empty() {
            bail!("factory arguments \"()\" are empty; at least one is required");
        }
        if args.len() > MAX_ARGS {
            bail!(
                "factory has {} arguments; at most {MAX_ARGS} are allowed",
                args.len()
            );
        }
        for (i, arg) in args.iter().enumerate() {
            let ok = match arg {
                Arg::Num(n) => n.is_finite(),
                // only a name that reads back as an account name
                Arg::Account(a) => matches!(bare(a.as_str()), Ok(Arg::Account(_))),
                _ => true,
            };
            if !ok {
                let text = show(&arg.to_string());
                bail!(
                    "factory argument {} ({text}) cannot be written in a path",
                    i + 1
                );
            }
        }
        let args = Self(args);
        let len = args.canonical().len();
        if len > MAX_ARGS_LEN {
            bail!("factory arguments take {len} bytes in canonical form, over {MAX_ARGS_LEN}");
        }
        Ok(args)
    }

    /// Parses the text between the parentheses of `strm(...)`: comma-separated
    /// JavaScript primitives or bare account names, with optional spaces and tabs.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let is_blank = |c: char| c == ' ' || c == '\t';
        let mut args = Vec::new();
        let mut rest = text.trim_start_matches(is_blank);
        loop {
            let n = args.len() + 1;
            if n > MAX_ARGS {
                bail!("factory has more than {MAX_ARGS} arguments");
            }
            let after = if rest.starts_with(['\'', '"']) {
                let Some(len) = quoted_len(rest) else {
                    let raw = show(rest.trim_end_matches(is_blank));
                    bail!("factory argument {n} ({raw}) is an unterminated string");
                };
                let literal = &rest[..len];
                let inner = &literal[1..len - 1];
                let why = |why| path_error!("factory argument {n} ({}) {why}", show(literal));
                args.push(Arg::Str(unescape(inner).map_err(why)?));
                &rest[len..]
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                let token = rest[..end].trim_end_matches(is_blank);
                if token.is_empty() {
                    if n == 1 && end == rest.len() {
                        bail!("factory arguments \"()\" are empty; at least one is required");
                    }
                    bail!("factory argument {n} is empty");
                }
                let why = |why| path_error!("factory argument {n} ({}) {why}", show(token));
                args.push(bare(token).map_err(why)?);
                &rest[end..]
            };
            let after = after.trim_start_matches(is_blank);
            match after.strip_prefix(',') {
                Some(next) => rest = next.trim_start_matches(is_blank),
                None if after.is_empty() => break,
                None => {
                    bail!(
                        "factory argument {n} is followed by unexpected text {}",
                        show(after)
                    );
                }
            }
        }
        Self::new(args)
    }

    /// Returns the canonical form without parentheses, such as `'a',1,bob`.
    pub fn canonical(&self) -> String {
        self.to_string()
    }

    /// Returns the arguments in order.
    pub fn as_slice(&self) -> &[Arg] {
        &self.0
    }
}

/// Writes the canonical form, the same as [`Args::canonical`].
impl fmt::Display for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{arg}")?;
        }
        Ok(())
    }
}

/// Returns the byte length of the quoted string at the start of `s`, closing quote
/// included, or `None` when it is unterminated.
fn quoted_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    let (_, quote) = chars.next()?;
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == quote {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// Returns the byte offset of the first `)` outside quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let mut i = 0;
    while let Some(c) = s[i..].chars().next() {
        match c {
            ')' => return Some(i),
            '\'' | '"' => i += quoted_len(&s[i..])?,
            _ => i += c.len_utf8(),
        }
    }
    None
}

/// Resolves the JavaScript escapes of a string literal's content.
fn unescape(inner: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(e) = chars.next() else {
            return Err("ends with a lone backslash");
        };
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'v' => out.push('\u{b}'),
            '0' if !chars.peek().is_some_and(char::is_ascii_digit) => out.push('\0'),
            '0'..='7' => return Err("has a legacy octal escape, which is not supported"),
            'x' => {
                let hi = chars.next().and_then(|c| c.to_digit(16));
                let lo = chars.next().and_then(|c| c.to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(char::from((hi * 16 + lo) as u8)),
                    _ => return Err("has an invalid \\x escape (expected two hex digits)"),
                }
            }
            'u' => {
                let unit = unicode_escape(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&unit) {
                    let mut look = chars.clone();
                    let low = match (look.next(), look.next()) {
                        (Some('\\'), Some('u')) => unicode_escape(&mut look)?,
                        _ => return Err("has a lone surrogate \\u escape"),
                    };
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err("has a lone surrogate \\u escape");
                    }
                    chars = look;
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    unit
                };
                out.push(char::from_u32(code).ok_or("has a lone surrogate \\u escape")?);
            }
            '\r' => {
                chars.next_if_eq(&'\n');
            }
            '\n' | '\u{2028}' | '\u{2029}' => {}
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Reads the rest of a `\uXXXX` or `\u{X…}` escape after the `u`.
fn unicode_escape(chars: &mut Peekable<Chars<'_>>) -> Result<u32, &'static str> {
    const BAD: &str = "has an invalid \\u escape (expected \\uXXXX or \\u{X…} up to 10FFFF)";
    if chars.next_if_eq(&'{').is_some() {
        let mut value = 0u32;
        let mut digits = 0;
        loop {
            match chars.next() {
                Some('}') if digits > 0 => return Ok(value),
                Some(c) => {
                    value = value * 16 + c.to_digit(16).ok_or(BAD)?;
                    digits += 1;
                    if value > 0x10FFFF {
                        return Err(BAD);
                    }
                }
                None => return Err(BAD),
            }
        }
    }
    let mut value = 0u32;
    for _ in 0..4 {
        value = value * 16 + chars.next().and_then(|c| c.to_digit(16)).ok_or(BAD)?;
    }
    Ok(value)
}

/// Classifies an unquoted argument: keyword, number, then account name.
fn bare(token: &str) -> Result<Arg, &'static str> {
    match token {
        "true" => Ok(Arg::Bool(true)),
        "false" => Ok(Arg::Bool(false)),
        "null" => Ok(Arg::Null),
        "NaN" | "Infinity" | "-Infinity" | "undefined" => Err(
            "is a JavaScript value that is not a finite number nor an account name; \
             quote it for a string",
        ),
        _ if has_leading_zero(token) => Err(
            "has a leading zero, which JavaScript reads as a legacy octal literal; \
             write the number without it (or 0o… for octal)",
        ),
        _ => match number(token) {
            Some(n) if n.is_finite() => Ok(Arg::Num(n)),
            Some(_) => Err("is not a finite number"),
            None if is_name(token) => Ok(Arg::Account(AccountName(token.to_owned()))),
            None => Err("is not a string, number, true, false, null or account name"),
        },
    }
}

/// Whether a decimal literal starts with a zero followed by a digit (`010`, `-01.5`).
fn has_leading_zero(token: &str) -> bool {
    let body = token.strip_prefix(['-', '+']).unwrap_or(token).as_bytes();
    body.len() > 1 && body[0] == b'0' && body[1].is_ascii_digit()
}

/// Parses a JavaScript numeric literal with an optional sign: decimal (`.5`, `5.`,
/// `1e21`) or `0x`/`0o`/`0b` integer; `None` when `token` is not one.
fn number(token: &str) -> Option<f64> {
    let (negative, body) = match token.as_bytes().first()? {
        b'-' => (true, &token[1..]),
        b'+' => (false, &token[1..]),
        _ => (false, token),
    };
    let radix = match body.get(..2) {
        Some("0x" | "0X") => 16,
        Some("0o" | "0O") => 8,
        Some("0b" | "0B") => 2,
        _ => 10,
    };
    let value = if radix == 10 {
        // Past the sign check, Rust's documented float grammar is JavaScript's decimal one.
        let decimal_chars = body
            .bytes()
            .all(|b| b.is_ascii_digit() || b".eE+-".contains(&b));
        if !body.starts_with(|c: char| c.is_ascii_digit() || c == '.') || !decimal_chars {
            return None;
        }
        body.parse::<f64>().ok()?
    } else {
        let digits = &body[2..];
        if digits.is_empty() {
            return None;
        }
        // Exact while the value fits in u128, approximate (but finite-checked) beyond.
        let (mut exact, mut approx) = (Some(0u128), 0f64);
        for c in digits.chars() {
            let d = c.to_digit(radix)?;
            exact = exact.and_then(|e| e.checked_mul(radix.into())?.checked_add(d.into()));
            approx = approx * f64::from(radix) + f64::from(d);
        }
        exact.map_or(approx, |e| e as f64)
    };
    Some(if negative { -value } else { value })
}

/// A stream or substream: `acct/strm` or `acct/strm(args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPath {
    /// The account owning the stream.
    pub account: AccountName,
    /// The stream, or the factory when `args` is set.
    pub stream: StreamName,
    /// The factory arguments of a substream.
    pub args: Option<Args>,
}

impl StreamPath {
    /// The path of a stored (sub)stream from its stored names, which were checked when
    /// they were written (internal names such as `strm/logs` among them); `None` when
    /// the stored args do not parse.
    pub(crate) fn stored(account: &str, stream: &str, args: &str) -> Option<Self> {
        Some(StreamPath {
            account: AccountName(account.to_owned()),
            stream: StreamName(stream.to_owned()),
            args: if args.is_empty() {
                None
            } else {
                Some(Args::parse(args).ok()?)
            },
        })
    }

    /// The version `n` of `strm@{n}`, the history a splice replaced; `None` for a
    /// stream's current history.
    pub fn version(&self) -> Option<u64> {
        let (_, n) = self.stream.as_str().rsplit_once('@')?;
        n.parse().ok()
    }

    /// The stream that holds this stream's log (`/{acct}/{strm}/logs`): stored as a
    /// plain stream named `strm/logs`, a name no URL can give, so it never clashes with
    /// a user's stream and stays out of account listings. Factory args are dropped: a
    /// factory has one log.
    pub fn logs(&self) -> StreamPath {
        StreamPath {
            account: self.account.clone(),
            stream: StreamName(format!("{}/logs", self.stream)),
            args: None,
        }
    }

    /// The stream that holds the log of the pipe from this stream to `to`
    /// (`/{acct}/{strm}/logs/pipe/{acct2}/{strm2}`): a plain stream named
    /// `strm[(args)]/logs/pipe/acct2/strm2[(args)]`, internal like [`StreamPath::logs`].
    pub fn pipe_logs(&self, to: &StreamPath) -> StreamPath {
        StreamPath {
            account: self.account.clone(),
            stream: StreamName(match &self.args {
                Some(args) => format!("{}({args})/logs/pipe/{to}", self.stream),
                None => format!("{}/logs/pipe/{to}", self.stream),
            }),
            args: None,
        }
    }

    /// Returns the percent-encoded path `/acct/strm(args)`, valid as a URL path and
    /// an HTTP header value; [`parse`] reads it back as an equal stream path.
    pub fn url(&self) -> String {
        let (account, stream) = (self.account.as_str(), self.stream.as_str());
        let mut url = String::with_capacity(account.len() + stream.len() + 24);
        url.push('/');
        url.push_str(account);
        url.push('/');
        url.push_str(stream);
        if let Some(args) = &self.args {
            url.push('(');
            url.extend(utf8_percent_encode(&args.canonical(), ARG_ESCAPES));
            url.push(')');
        }
        url
    }
}

/// Writes the canonical form without a leading slash, such as `acme/events('a',1)`.
impl fmt::Display for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.account, self.stream)?;
        match &self.args {
            Some(args) => write!(f, "({args})"),
            None => Ok(()),
        }
    }
}

/// The format suffix of an event type path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeFormat {
    /// `.json`: the type's JSON schema.
    Json,
    /// `.ts`: the type's TypeScript declaration.
    Ts,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// `/{acct}`.
    Account(AccountName),
    /// `/{acct}/{strm}` or `/{acct}/{strm}({args})`.
    Stream(StreamPath),
    /// `/{acct}/{strm}/{index}` or `/{acct}/{strm}[{index}]`.
    Event(StreamPath, u64),
    /// `/{acct}/{strm}.{reducer}`.
    Reducer(StreamPath, ReducerName),
    /// `/{acct}/{strm}:{eventType}[.json|.ts]`.
    EventType {
        /// The stream the type belongs to.
        stream: StreamPath,
        /// The type name, 1 to 100 characters without control characters or `/`.
        event_type: String,
        /// The format suffix, when the path ends in `.json` or `.ts`.
        format: Option<TypeFormat>,
    },
    /// `/{acct}/{strm}/pipe/{acct2}/{strm2}`.
    Pipe {
        /// The source stream.
        from: StreamPath,
        /// The target stream.
        to: StreamPath,
    },
    /// `/{acct}/{strm}/logs`.
    Logs(StreamPath),
    /// `/{acct}/{strm}/logs/pipe/{acct2}/{strm2}`.
    PipeLogs {
        /// The source stream.
        from: StreamPath,
        /// The target stream.
        to: StreamPath,
    },
    /// `/{acct}/{strm}/settings`.
    Settings(StreamPath),
    /// `/{acct}/{strm}/substreams`.
    Substreams(StreamPath),
    /// `/{acct}/{strm}/reducers`.
    Reducers(StreamPath),
    /// `/{acct}/{strm}/pipes`: the pipes from the stream.
    Pipes(StreamPath),
    /// `/{acct}/{strm}/types`: the stream's event types.
    Types(StreamPath),
    /// `/{acct}/{strm}/webhooks`.
    Webhooks(StreamPath),
    /// `/{acct}/{strm}/webhooks/{id}`.
    Webhook(StreamPath, String),
    /// `/{acct}/{strm}/webhooks/{id}/resume`.
    WebhookResume(StreamPath, String),
    /// `/{acct}/{strm}/webhooks/{id}/pause`.
    WebhookPause(StreamPath, String),
    /// `/{acct}/{strm}/webhooks/{id}/replay`.
    WebhookReplay(StreamPath, String),
    /// `/{acct}/{strm}/splices`.
    Splices(StreamPath),
    /// `/{acct}/{strm}/splices/{id}`.
    Splice(StreamPath, String),
    /// `/{acct}/{strm}/splices/{id}/approve`.
    SpliceApprove(StreamPath, String),
}

impl Resource {
    /// Returns the stream paths the resource names: none for an account, two for a
    /// pipe, one otherwise.
    pub fn stream_paths(&self) -> Vec<&StreamPath> {
        match self {
            Resource::Account(_) => Vec::new(),
            Resource::Pipe { from, to } | Resource::PipeLogs { from, to } => vec![from, to],
            Resource::Stream(s)
            | Resource::Event(s, _)
            | Resource::Reducer(s, _)
            | Resource::EventType { stream: s, .. }
            | Resource::Logs(s)
            | Resource::Settings(s)
            | Resource::Substreams(s)
            | Resource::Reducers(s)
            | Resource::Webhooks(s)
            | Resource::Webhook(s, _)
            | Resource::Pipes(s)
            | Resource::Types(s)
            | Resource::WebhookResume(s, _)
            | Resource::WebhookPause(s, _)
            | Resource::WebhookReplay(s, _)
            | Resource::Splices(s)
            | Resource::Splice(s, _)
            | Resource::SpliceApprove(s, _) => vec![s],
        }
    }
}

/// Parses a request path, still percent-encoded and without its query, into the
/// resource it names. One trailing slash is tolerated.
pub fn parse(raw_path: &str) -> Result<Resource, PathError> {
    let Some(encoded) = raw_path.strip_prefix('/') else {
        bail!("path {} does not start with \"/\"", show(raw_path));
    };
    let Ok(decoded) = percent_decode_str(encoded).decode_utf8() else {
        bail!(
            "path {} is not valid UTF-8 after percent-decoding",
            show(raw_path)
        );
    };
    if decoded.len() + 1 > MAX_PATH_LEN {
        bail!("path is longer than {MAX_PATH_LEN} bytes after percent-decoding");
    }
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    if body.is_empty() {
        bail!("path is empty; expected /{{account}}");
    }
    let (account, rest) = split_segment(body);
    let account = AccountName::new(account)?;
    let Some(rest) = rest else {
        return Ok(Resource::Account(account));
    };
    let (stream, rest) = stream_path(account, rest)?;
    after_stream(stream, rest)
}

/// Splits `s` at its first `/`.
fn split_segment(s: &str) -> (&str, Option<&str>) {
    s.split_once('/')
        .map_or((s, None), |(first, rest)| (first, Some(rest)))
}

/// Parses `strm` or `strm(args)` at the start of `s`, returning the rest.
fn stream_path(account: AccountName, s: &str) -> Result<(StreamPath, &str), PathError> {
    let end = s.find(['/', '(', '[', '.', ':', '@']).unwrap_or(s.len());
    let stream = StreamName::new(&s[..end])?;
    if let Some(v) = s[end..].strip_prefix('@') {
        // `strm@{n}`: a history a splice replaced (API §12)
        let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let version = match v[..digits].parse::<u64>() {
            Ok(n) if n > 0 && !v.starts_with('0') => n,
            _ => bail!(
                "stream version {} after {} is not a whole number from 1",
                show(&v[..digits.max(1).min(v.len())]),
                show(&s[..end])
            ),
        };
        let rest = &v[digits..];
        if rest.starts_with('(') {
            bail!(
                "stream {} has versions only as a plain stream: a factory is not spliced",
                show(&s[..end])
            );
        }
        return Ok((
            StreamPath {
                account,
                stream: stream.version(version),
                args: None,
            },
            rest,
        ));
    }
    let Some(inner) = s[end..].strip_prefix('(') else {
        return Ok((
            StreamPath {
                account,
                stream,
                args: None,
            },
            &s[end..],
        ));
    };
    let Some(close) = find_close(inner) else {
        Args::parse(inner)?;
        bail!(
            "factory arguments of stream {} have no closing \")\"",
            show(&s[..end])
        );
    };
    let args = Some(Args::parse(&inner[..close])?);
    Ok((
        StreamPath {
            account,
            stream,
            args,
        },
        &inner[close + 1..],
    ))
}

/// Parses `acct/strm[(args)]` filling the whole of `s`, as a pipe target.
fn pipe_target(s: &str) -> Result<StreamPath, PathError> {
    let Some((account, rest)) = s.split_once('/') else {
        bail!("pipe target {} is not of the form account/stream", show(s));
    };
    let (target, extra) = stream_path(AccountName::new(account)?, rest)?;
    if !extra.is_empty() {
        let (extra, target) = (show(extra), show(&target.to_string()));
        bail!("unexpected text {extra} after pipe target {target}");
    }
    Ok(target)
}

fn unknown(rest: &str, after: &str) -> Result<Resource, PathError> {
    let segment = show(split_segment(rest).0);
    bail!("unknown path segment {segment} after {after}")
}

fn index(text: &str) -> Result<u64, PathError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        bail!("event index {} is not a non-negative integer", show(text));
    }
    // one index, one spelling: `01` is refused as path arguments refuse `01`
    if text.len() > 1 && text.starts_with('0') {
        let plain = match text.trim_start_matches('0') {
            "" => "0",
            digits => digits,
        };
        bail!(
            "event index {} has a leading zero; write it as {plain}",
            show(text)
        );
    }
    text.parse()
        .map_err(|_| path_error!("event index {} is larger than {}", show(text), u64::MAX))
}

/// Parses `{type}[.json|.ts]` after a stream's `:`.
fn event_type(stream: StreamPath, text: &str) -> Result<Resource, PathError> {
    let (event_type, format) = if let Some(t) = text.strip_suffix(".json") {
        (t, Some(TypeFormat::Json))
    } else if let Some(t) = text.strip_suffix(".ts") {
        (t, Some(TypeFormat::Ts))
    } else {
        (text, None)
    };
    let shown = || show(event_type);
    if event_type.is_empty() {
        bail!(
            "event type after stream {} is empty",
            show(&stream.to_string())
        );
    }
    if event_type.chars().count() > MAX_EVENT_TYPE_LEN {
        bail!(
            "event type {} is longer than {MAX_EVENT_TYPE_LEN} characters",
            shown()
        );
    }
    if event_type.chars().any(|c| c.is_control() || c == '/') {
        bail!(
            "event type {} contains a control character or \"/\"",
            shown()
        );
    }
    let event_type = event_type.to_owned();
    Ok(Resource::EventType {
        stream,
        event_type,
        format,
    })
}

/// Parses what follows a stream path: nothing, `[index]`, `.reducer`, `:type` or `/…`.
fn after_stream(stream: StreamPath, rest: &str) -> Result<Resource, PathError> {
    // the common forms first, before the names that only errors need are made
    if rest.is_empty() {
        return Ok(Resource::Stream(stream));
    }
    if let Some(reducer) = rest.strip_prefix('.') {
        return Ok(Resource::Reducer(stream, ReducerName::new(reducer)?));
    }
    if let Some(text) = rest.strip_prefix(':') {
        return event_type(stream, text);
    }
    let raw = stream.to_string();
    let name = show(&raw);
    if let Some(inner) = rest.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            bail!(
                "event index {} after stream {name} has no closing \"]\"",
                show(rest)
            );
        };
        return Ok(Resource::Event(stream, index(inner)?));
    }
    let Some(segments) = rest.strip_prefix('/') else {
        bail!("unexpected text {} after stream {name}", show(rest));
    };
    let after = |path: &str| show(&format!("{raw}/{path}"));
    Ok(match split_segment(segments) {
        ("pipe", Some(target)) => Resource::Pipe {
            to: pipe_target(target)?,
            from: stream,
        },
        ("pipe", None) => bail!("pipe from stream {name} has no target /account/stream"),
        ("logs", None) => Resource::Logs(stream),
        ("logs", Some(more)) => match split_segment(more) {
            ("pipe", Some(target)) => Resource::PipeLogs {
                to: pipe_target(target)?,
                from: stream,
            },
            ("pipe", None) => bail!("pipe logs of stream {name} have no target /account/stream"),
            _ => return unknown(more, &after("logs")),
        },
        ("settings", None) => Resource::Settings(stream),
        ("substreams", None) => Resource::Substreams(stream),
        ("reducers", None) => Resource::Reducers(stream),
        ("pipes", None) => Resource::Pipes(stream),
        ("types", None) => Resource::Types(stream),
        ("webhooks", None) => Resource::Webhooks(stream),
        ("webhooks", Some(more)) => {
            let (id, action) = split_segment(more);
            check_name("webhook id", id)?;
            match action {
                None => Resource::Webhook(stream, id.to_owned()),
                Some("resume") => Resource::WebhookResume(stream, id.to_owned()),
                Some("pause") => Resource::WebhookPause(stream, id.to_owned()),
                Some("replay") => Resource::WebhookReplay(stream, id.to_owned()),
                Some(action) => return unknown(action, &after(&format!("webhooks/{id}"))),
            }
        }
        ("splices", None) => Resource::Splices(stream),
        ("splices", Some(more)) => {
            let (id, action) = split_segment(more);
            check_name("splice id", id)?;
            match action {
                None => Resource::Splice(stream, id.to_owned()),
                Some("approve") => Resource::SpliceApprove(stream, id.to_owned()),
                Some(action) => return unknown(action, &after(&format!("splices/{id}"))),
            }
        }
        (segment @ ("settings" | "substreams" | "reducers" | "pipes" | "types"), Some(more)) => {
            return unknown(more, &after(segment));
        }
        (segment, None) if segment.starts_with(|c: char| c.is_ascii_digit()) => {
            Resource::Event(stream, index(segment)?)
        }
        (segment, Some(more))
            if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) =>
        {
            return unknown(more, &after(segment));
        }
        (segment, _) => return unknown(segment, &format!("stream {name}")),
    })
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
