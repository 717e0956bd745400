//! Turning values between Rust and JavaScript: the event object a reducer sees, and
//! errors thrown in the sandbox.

use rquickjs::{Atom, Ctx, Object};

use crate::{EventIn, JsError, JsErrorKind};

/// Property names of the event object, made once per batch.
pub(crate) struct Keys<'js> {
    stream: Atom<'js>,
    index: Atom<'js>,
    id: Atom<'js>,
    event_type: Atom<'js>,
    timestamp: Atom<'js>,
    content_type: Atom<'js>,
    data: Atom<'js>,
    encoding: Atom<'js>,
    args: Atom<'js>,
}

impl<'js> Keys<'js> {
    pub(crate) fn new(ctx: &Ctx<'js>) -> rquickjs::Result<Self> {
        let atom = |name: &str| Atom::from_str(ctx.clone(), name);
        Ok(Self {
            stream: atom("stream")?,
            index: atom("index")?,
            id: atom("id")?,
            event_type: atom("type")?,
            timestamp: atom("timestamp")?,
            content_type: atom("contentType")?,
            data: atom("data")?,
            encoding: atom("encoding")?,
            args: atom("args")?,
        })
    }

    pub(crate) fn event(&self, ctx: &Ctx<'js>, e: &EventIn<'_>) -> rquickjs::Result<Object<'js>> {
        let o = Object::new(ctx.clone())?;
        o.set(self.stream.clone(), e.stream)?;
        o.set(self.index.clone(), e.index as f64)?;
        o.set(self.id.clone(), e.id)?;
        o.set(self.event_type.clone(), e.event_type)?;
        o.set(self.timestamp.clone(), e.timestamp as f64)?;
        o.set(self.content_type.clone(), e.content_type)?;
        o.set(self.data.clone(), ctx.json_parse(e.data_json)?)?;
        if let Some(encoding) = e.encoding {
            o.set(self.encoding.clone(), encoding)?;
        }
        if let Some(args) = e.args_json {
            o.set(self.args.clone(), ctx.json_parse(args)?)?;
        }
        Ok(o)
    }
}

/// Turns an rquickjs error into a [`JsError`], taking the pending exception's message
/// and stack when there is one.
/// Most characters of a thrown error's message, and of its stack, kept: they go into
/// logs and answers, which a thrown megabyte string must not fill.
const MESSAGE_CHARS: usize = 4096;
/// The message of a thrown `null`.
pub(crate) const NULL_THROWN: &str = "null was thrown";
/// The message of the error QuickJS throws when an allocation fails.
pub(crate) const OUT_OF_MEMORY: &str = "InternalError: out of memory";
const STACK_CHARS: usize = 16384;

/// `text` cut to `max` characters, saying how many more there were.
fn clipped(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((end, _)) => {
            let more = text[end..].chars().count();
            format!("{} ... ({more} more characters)", &text[..end])
        }
    }
}

pub(crate) fn caught(ctx: &Ctx<'_>, error: rquickjs::Error) -> JsError {
    let mut e = caught_whole(ctx, error);
    e.message = clipped(e.message, MESSAGE_CHARS);
    e.stack = e.stack.map(|s| clipped(s, STACK_CHARS));
    e
}

fn caught_whole(ctx: &Ctx<'_>, error: rquickjs::Error) -> JsError {
    if !matches!(error, rquickjs::Error::Exception) {
        return internal(error);
    }
    let thrown = ctx.catch();
    if let Some(object) = thrown.as_object() {
        let name: Option<String> = object.get("name").ok();
        let message: Option<String> = object.get("message").ok();
        let stack: Option<String> = object.get("stack").ok().filter(|s: &String| !s.is_empty());
        let message = match (name, message) {
            (Some(name), Some(message)) if !name.is_empty() => format!("{name}: {message}"),
            (_, Some(message)) => message,
            _ => ctx
                .json_stringify(thrown.clone())
                .ok()
                .flatten()
                .and_then(|s| s.to_string().ok())
                .unwrap_or_else(|| "an object was thrown".into()),
        };
        return JsError {
            kind: JsErrorKind::Thrown,
            message,
            stack,
        };
    }
    let message = if thrown.is_null() {
        // also what QuickJS throws when it cannot even allocate its out-of-memory
        // error (the sandbox says so)
        NULL_THROWN.to_owned()
    } else if thrown.is_undefined() {
        "undefined was thrown".to_owned()
    } else if let Some(s) = thrown.as_string() {
        s.to_string().unwrap_or_default()
    } else {
        ctx.json_stringify(thrown)
            .ok()
            .flatten()
            .and_then(|s| s.to_string().ok())
            .unwrap_or_else(|| "a value was thrown".into())
    };
    JsError {
        kind: JsErrorKind::Thrown,
        message,
        stack: None,
    }
}

pub(crate) fn internal(error: rquickjs::Error) -> JsError {
    JsError {
        kind: JsErrorKind::Internal,
        message: error.to_string(),
        stack: None,
    }
}
