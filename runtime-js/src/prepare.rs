//! Turns a reducer's source into JavaScript that the sandbox can load, before anything
//! runs: parses it with oxc (so a syntax error names its line and column), strips
//! TypeScript types, decides whether it is a module with a default export or one bare
//! function expression, and lists the other reducers it reads through `current`.

use std::path::Path;

use oxc_allocator::Allocator;
use oxc_codegen::Codegen;
use oxc_parser::Parser;
use oxc_semantic::SemanticBuilder;
use oxc_span::SourceType;
use oxc_transformer::{TransformOptions, Transformer};

use crate::CompileError;

/// The language a reducer's source is written in, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    JavaScript,
    TypeScript,
}

/// How the prepared code yields the reducer function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An ES module whose default export is the reducer.
    Module,
    /// A script whose completion value is the reducer (`(n = 0, e) => n + 1`).
    Expression,
}

/// Reducer code ready to load into a [`crate::Sandbox`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// JavaScript: the source itself, or the source with its types stripped.
    pub js: String,
    pub shape: Shape,
    /// Names of other reducers the code reads as `current.name` or `current['name']`,
    /// sorted and without repeats.
    pub reads: Vec<String>,
}

/// Native stack a parse may take for each opening bracket of the source (`(`, `[`,
/// `{`, `<`) and for each other byte: oxc's parser recurses once per nesting level and
/// has no depth limit of its own. Measured on x86-64 by parsing fifteen constructs
/// nested ever deeper on threads of a known stack, release and debug builds, for
/// JavaScript and TypeScript alike: at most about 2.8 KiB a level of brackets (an
/// object or a function per level) and 0.45 KiB a byte for chains without brackets
/// (`x => x => ...`); these leave half as much again.
const STACK_PER_OPENER: usize = 4 * 1024;
const STACK_PER_BYTE: usize = 768;
/// Stack a parse runs with beyond the per-level share.
const STACK_BASE: usize = 2 * 1024 * 1024;
/// The largest stack reserved for a parse: code that could need more is refused
/// unparsed.
const STACK_MAX: usize = 1024 * 1024 * 1024;
/// Parses that reserve more than this run one at a time, so that hostile code cannot
/// make many large stacks at once.
const STACK_SHARED: usize = 64 * 1024 * 1024;

/// Parses `source`, strips types when it is TypeScript, and works out its shape and the
/// reducers it reads.
///
/// The parse runs on a thread of its own, with a stack large enough for the deepest
/// nesting `source` could hold, so that no code can overflow the caller's stack; code
/// that could need more than [`STACK_MAX`] is refused without being parsed.
pub fn prepare(source: &str, language: Language) -> Result<Prepared, CompileError> {
    static LARGE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let stack = stack_bound(source);
    if stack > STACK_MAX {
        return Err(CompileError::at(
            source,
            0,
            format!(
                "the code is too large or has too many brackets to be parsed safely ({} bytes, \
                 {} opening brackets): split it, or leave out what it does not use",
                source.len(),
                openers(source)
            ),
        ));
    }
    let _one_at_a_time = (stack > STACK_SHARED).then(|| {
        LARGE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    });
    let unparsed = || {
        CompileError::at(
            source,
            0,
            "the code could not be parsed (the parser failed)".into(),
        )
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("eddy-parse".into())
            .stack_size(stack)
            .spawn_scoped(scope, || prepare_here(source, language))
            .map_err(|_| unparsed())?
            .join()
            .map_err(|_| unparsed())?
    })
}

/// Opening brackets of `source`, in strings and comments too: an upper bound on how
/// deep its brackets can nest, whatever the parser takes for code.
fn openers(source: &str) -> usize {
    source
        .bytes()
        .filter(|b| matches!(b, b'(' | b'[' | b'{' | b'<'))
        .count()
}

/// The stack a parse of `source` needs at most.
fn stack_bound(source: &str) -> usize {
    STACK_BASE
        .saturating_add(openers(source).saturating_mul(STACK_PER_OPENER))
        .saturating_add(source.len().saturating_mul(STACK_PER_BYTE))
}

fn prepare_here(source: &str, language: Language) -> Result<Prepared, CompileError> {
    let allocator = Allocator::default();
    let module_type = match language {
        Language::JavaScript => SourceType::mjs(),
        Language::TypeScript => SourceType::ts(),
    };
    let parsed = Parser::new(&allocator, source, module_type).parse();
    // A source with a syntax error is still a module when it has an import or export
    // the parser recovered, or mentions `export` at all: its error is reported as such.
    let module = parsed
        .program
        .body
        .iter()
        .any(|s| s.is_module_declaration())
        || (parsed.diagnostics.has_errors() && source.contains("export"));

    let (js, shape) = if module {
        (strip(source, language, module_type)?, Shape::Module)
    } else {
        // Not a module: one function expression. Parenthesised, so that
        // `function (s, e) {...}` parses as an expression rather than a declaration.
        // (on the source's own first line, so that the lines of stack traces are the
        // author's)
        let wrapped = format!("({source}\n)");
        let js = strip(&wrapped, language, module_type.with_script(true))
            .map_err(CompileError::unwrapped)?;
        (js, Shape::Expression)
    };
    let reads = reads_of_current(&js);
    Ok(Prepared { js, shape, reads })
}

/// Parses `source` and answers it as JavaScript: unchanged for JavaScript (so stack
/// traces name the author's own lines), types stripped for TypeScript.
fn strip(
    source: &str,
    language: Language,
    source_type: SourceType,
) -> Result<String, CompileError> {
    let allocator = Allocator::default();
    let mut parsed = Parser::new(&allocator, source, source_type).parse();
    if let Some(error) = first_error(source, &parsed.diagnostics) {
        return Err(error);
    }
    if parsed.panicked {
        return Err(CompileError::at(
            source,
            source.len(),
            "the code cannot be parsed".into(),
        ));
    }
    if language == Language::JavaScript {
        if let Some(at) = bigint_literal(&parsed.program) {
            return Err(CompileError::at(source, at, BIGINT.into()));
        }
        return Ok(source.to_owned());
    }
    let scoping = SemanticBuilder::new()
        .build(&parsed.program)
        .semantic
        .into_scoping();
    let options = TransformOptions::default();
    let out = Transformer::new(&allocator, Path::new("reducer.ts"), &options)
        .build_with_scoping(scoping, &mut parsed.program);
    if let Some(error) = first_error(source, &out.diagnostics) {
        return Err(error);
    }
    let js = Codegen::new().build(&parsed.program).code;
    // what is left once the types are gone (a type may be a BigInt literal)
    let allocator = Allocator::default();
    let stripped = Parser::new(&allocator, &js, source_type.with_typescript(false)).parse();
    if let Some(at) = bigint_literal(&stripped.program) {
        let literal = js
            .get(at..)
            .unwrap_or("")
            .split(|c: char| !c.is_ascii_alphanumeric());
        let literal = literal.into_iter().next().unwrap_or("");
        return Err(CompileError::at(
            source,
            source.find(literal).unwrap_or(0),
            BIGINT.into(),
        ));
    }
    Ok(js)
}

/// Why code with a BigInt literal is refused.
const BIGINT: &str = "BigInt is not available in reducers and pipe functions (one operation \
                      on a large BigInt can run for seconds, past any time limit): use \
                      numbers, or strings for values beyond them";

/// Where the first BigInt literal (`12n`) of `program` starts.
fn bigint_literal(program: &oxc_ast::ast::Program<'_>) -> Option<usize> {
    use oxc_ast_visit::Visit;
    #[derive(Default)]
    struct Find(Option<usize>);
    impl<'a> Visit<'a> for Find {
        fn visit_big_int_literal(&mut self, it: &oxc_ast::ast::BigIntLiteral<'a>) {
            self.0.get_or_insert(it.span.start as usize);
        }
    }
    let mut find = Find::default();
    find.visit_program(program);
    find.0
}

/// The first error among oxc's diagnostics, located in `source`.
fn first_error(source: &str, diagnostics: &oxc_diagnostics::Diagnostics) -> Option<CompileError> {
    let first = diagnostics.errors().next()?;
    let offset = first
        .labels
        .as_slice()
        .first()
        .map_or(0, |l| l.offset() as usize);
    Some(CompileError::at(source, offset, first.to_string()))
}

/// Finds `current.name`, `current?.name` and `current['name']` / `current["name"]` in
/// `js`, outside the middle of longer identifiers. A textual scan: a reducer that
/// reaches another through a computed key (`current[x]`) is not seen, and the docs say so.
fn reads_of_current(js: &str) -> Vec<String> {
    const WORD: &str = "current";
    let bytes = js.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(found) = js[from..].find(WORD) {
        let start = from + found;
        let end = start + WORD.len();
        from = end;
        if start > 0 && (ident(bytes[start - 1]) || bytes[start - 1] == b'.') {
            continue;
        }
        let rest = js[end..].trim_start();
        let rest = rest.strip_prefix("?.").map(|r| format!(".{r}"));
        let rest = rest.as_deref().unwrap_or_else(|| js[end..].trim_start());
        if let Some(after) = rest.strip_prefix('.') {
            let after = after.trim_start();
            let len = after.bytes().take_while(|&b| ident(b)).count();
            if len > 0 {
                names.push(after[..len].to_owned());
            }
        } else if let Some(after) = rest.strip_prefix('[') {
            let after = after.trim_start();
            if let Some(quote) = after.chars().next().filter(|c| *c == '\'' || *c == '"')
                && let Some(close) = after[1..].find(quote)
            {
                names.push(after[1..1 + close].to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_with_default_export_is_a_module() {
        let p = prepare("export default (s = 0, e) => s + 1;", Language::JavaScript).unwrap();
        assert_eq!(p.shape, Shape::Module);
        assert_eq!(p.js, "export default (s = 0, e) => s + 1;");
    }

    #[test]
    fn bare_function_is_an_expression() {
        let p = prepare("(n = 0, e) => n + 1", Language::JavaScript).unwrap();
        assert_eq!(p.shape, Shape::Expression);
        let p = prepare("function (s, e) { return 1 }", Language::JavaScript).unwrap();
        assert_eq!(p.shape, Shape::Expression);
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = prepare(
            "export default (s, e) => {\n  return s +;\n}",
            Language::JavaScript,
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        let e = prepare("(s, e) =>\n\n  s +* 1", Language::JavaScript).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
    }

    #[test]
    fn typescript_types_are_stripped() {
        let src = "interface S { n: number }\nexport default (s: S = { n: 0 }, e: any): S => ({ n: s.n + 1 });";
        let p = prepare(src, Language::TypeScript).unwrap();
        assert_eq!(p.shape, Shape::Module);
        assert!(
            !p.js.contains("interface") && !p.js.contains(": S"),
            "{}",
            p.js
        );
        let p = prepare(
            "(n: number = 0, e: unknown): number => n + 1",
            Language::TypeScript,
        )
        .unwrap();
        assert_eq!(p.shape, Shape::Expression);
        assert!(!p.js.contains("number"), "{}", p.js);
    }

    /// oxc's parser recurses once per level: code nested many thousands deep is
    /// parsed on a stack made for it, or refused unparsed, and never overflows.
    #[test]
    fn deeply_nested_code_is_parsed_or_refused_never_overflowing() {
        let deep = |open: &str, middle: &str, close: &str, n: usize| {
            format!(
                "(s = 0, e) => {}{middle}{}",
                open.repeat(n),
                close.repeat(n)
            )
        };
        let cases = [
            (deep("(", "1", ")", 20_000), Language::JavaScript),
            (deep("({a:", "1", "})", 20_000), Language::JavaScript),
            (
                deep("(function(){return ", "1", "})", 10_000),
                Language::JavaScript,
            ),
            (deep("x=>", "1", "", 50_000), Language::JavaScript),
            (deep("`${", "1", "}`", 20_000), Language::TypeScript),
            (
                format!(
                    "(s: {}number{} = 0) => s",
                    "Array<".repeat(20_000),
                    ">".repeat(20_000)
                ),
                Language::TypeScript,
            ),
        ];
        let chains = [
            format!("(s = 0, e) => {}1", "!".repeat(200_000)),
            format!("(s = 0, e) => {}1", "void ".repeat(50_000)),
            format!("(s = 0, e) => {{ {}1 }}", "a:".repeat(100_000)),
            format!("(s = 0, e) => {}1", "a=".repeat(100_000)),
            format!("({}a{} = e) => s", "[".repeat(20_000), "]".repeat(20_000)),
        ];
        let cases = cases.into_iter().chain(
            chains
                .into_iter()
                .flat_map(|c| [(c.clone(), Language::JavaScript), (c, Language::TypeScript)]),
        );
        for (code, language) in cases {
            let _ = prepare(&code, language);
        }
        let e = prepare(&deep("(", "1", ")", 300_000), Language::JavaScript).unwrap_err();
        assert!(e.message.contains("too many brackets"), "{e}");
        // ordinary code is unaffected
        assert!(prepare(&deep("(", "1", ")", 50), Language::JavaScript).is_ok());
    }

    /// BigInt literals are refused where they are, in JavaScript and in what is left
    /// of TypeScript once its types are gone.
    #[test]
    fn bigint_literals_are_refused_at_their_line() {
        let e = prepare(
            "(s = 0, e) =>\n  s + Number(2n ** 10n)",
            Language::JavaScript,
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (2, 14), "{e}");
        assert!(e.message.starts_with("BigInt is not available"), "{e}");
        let e = prepare(
            "type Big = 1n;\nexport default (s: number = 0): number =>\n  s + Number(7n)",
            Language::TypeScript,
        )
        .unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        // in a type alone, a BigInt literal goes with the type
        assert!(
            prepare(
                "type Big = 1n;\nexport default (s = 0) => s",
                Language::TypeScript
            )
            .is_ok()
        );
        // an identifier or string that merely looks like one is no literal
        assert!(prepare("(s = 0, e) => s + e.data.n + '1n'", Language::JavaScript).is_ok());
        // a function expression is read as QuickJS reads it, a script: HTML-like
        // comments and `await` as a name hide nothing
        for hidden in [
            "(s = 0, e) => [s <!--s, `\n, String(1n << 9n).length\n<!--`\n][0]",
            "typeof await /1, (s, e) => String(1n << 9n).length/g",
            "(s = 0, e) =>\n--> comment\ns + Number(1n)",
        ] {
            let e = prepare(hidden, Language::JavaScript).err();
            assert!(
                e.as_ref().is_some_and(|e| e.message == BIGINT),
                "{hidden:?}: {e:?}"
            );
        }
    }

    #[test]
    fn reads_of_current_are_found() {
        let p = prepare(
            "export default (s, e, i, current) => current.total + current?.avg + current['max'] + current[\"min\"] + recurrent.x + a.current.y",
            Language::JavaScript,
        )
        .unwrap();
        assert_eq!(p.reads, ["avg", "max", "min", "total"]);
    }
}
