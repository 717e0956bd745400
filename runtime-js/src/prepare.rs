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

/// Parses `source`, strips types when it is TypeScript, and works out its shape and the
/// reducers it reads.
pub fn prepare(source: &str, language: Language) -> Result<Prepared, CompileError> {
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
        let wrapped = format!("(\n{source}\n)");
        let js = strip(&wrapped, language, module_type.with_module(false))
            .map_err(|e| e.shifted_by_one_line())?;
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
    Ok(Codegen::new().build(&parsed.program).code)
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
