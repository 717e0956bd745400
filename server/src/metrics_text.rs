//! The Prometheus text format 0.0.4 for scrapers that ask for it: prometheus-client
//! writes only OpenMetrics, so its output is rewritten line by line (the two formats
//! differ in a few names and markers, not in structure).

use axum::http::{HeaderMap, header};

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the Accept header weighs `text/plain` above OpenMetrics (a tie, `*/*` or
/// no Accept at all get OpenMetrics).
pub fn prefers_text_format(headers: &HeaderMap) -> bool {
    let (mut om, mut text, mut text_any, mut any) = (None, None, None, None);
    let best = |slot: &mut Option<f32>, q: f32| *slot = Some(slot.map_or(q, |s: f32| s.max(q)));
    for range in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(crate::params::media_range)
    {
        let (t, s, q) = range;
        match (
            t.to_ascii_lowercase().as_str(),
            s.to_ascii_lowercase().as_str(),
        ) {
            ("application", "openmetrics-text") => best(&mut om, q),
            ("text", "plain") => best(&mut text, q),
            ("text", "*") => best(&mut text_any, q),
            ("*", "*") => best(&mut any, q),
            _ => {}
        }
    }
    let om = om.or(any).unwrap_or(0.0);
    let text = text.or(text_any).or(any).unwrap_or(0.0);
    text > om
}

/// Rewrites OpenMetrics text as the 0.0.4 text format: counters' HELP and TYPE name
/// the `_total` series, `unknown` is `untyped`, and `# UNIT`, `# EOF`, `_created`
/// series and exemplars are dropped.
pub fn from_openmetrics(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // families by name with their OpenMetrics type, as the TYPE lines declare them
    let mut types: Vec<(&str, &str)> = Vec::new();
    for line in om.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, name, rest) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let ty = types.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
            match kind {
                "TYPE" => {
                    types.push((name, rest));
                    let (suffix, ty) = match rest {
                        "counter" => ("_total", "counter"),
                        "gauge" | "histogram" | "summary" => ("", rest),
                        "info" => ("_info", "gauge"),
                        "stateset" => ("", "gauge"),
                        _ => ("", "untyped"),
                    };
                    out.push_str(&format!("# TYPE {name}{suffix} {ty}\n"));
                }
                "HELP" => {
                    // prometheus-client writes HELP before TYPE: look the type ahead
                    let ty = ty.or_else(|| type_ahead(om, name));
                    let suffix = match ty {
                        Some("counter") => "_total",
                        Some("info") => "_info",
                        _ => "",
                    };
                    // 0.0.4 escapes only backslash and newline in HELP
                    let help = rest.replace("\\\"", "\"");
                    out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
                }
                _ => {} // UNIT, EOF
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let sample = match line.find(" # ") {
            Some(i) => &line[..i],
            None => line,
        };
        let series = sample.split(['{', ' ']).next().unwrap_or("");
        let created_of = series
            .strip_suffix("_created")
            .and_then(|base| types.iter().find(|(n, _)| *n == base).map(|(_, t)| *t));
        if matches!(created_of, Some("counter" | "histogram" | "summary")) {
            continue;
        }
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// The OpenMetrics type of the family `name`, from its TYPE line.
fn type_ahead<'a>(om: &'a str, name: &str) -> Option<&'a str> {
    om.lines().find_map(|l| {
        let rest = l.strip_prefix("# TYPE ")?.strip_prefix(name)?;
        rest.strip_prefix(' ')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_text_format() {
        let om = "# HELP c Things \\\"done\\\".\n# TYPE c counter\nc_total 3\nc_created 1.5\n\
                  # HELP h Latency.\n# TYPE h histogram\n# UNIT h seconds\n\
                  h_bucket{le=\"+Inf\"} 1 # {id=\"x\"} 0.1\nh_sum 0.1\nh_count 1\n\
                  # HELP u Odd.\n# TYPE u unknown\nu 1\n# EOF\n";
        assert_eq!(
            from_openmetrics(om),
            "# HELP c_total Things \"done\".\n# TYPE c_total counter\nc_total 3\n\
             # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.1\n\
             h_count 1\n# HELP u Odd.\n# TYPE u untyped\nu 1\n"
        );
    }

    #[test]
    fn accept_chooses_the_format() {
        let wants = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, accept.parse().unwrap());
            prefers_text_format(&h)
        };
        assert!(!prefers_text_format(&HeaderMap::new()));
        assert!(wants("text/plain;version=0.0.4"));
        assert!(wants("text/plain;version=0.0.4;q=0.3,*/*;q=0.2"));
        assert!(!wants("*/*"));
        assert!(!wants(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"
        ));
        assert!(!wants("application/openmetrics-text, text/plain"));
        assert!(wants("text/*"));
        assert!(!wants("text/plain;q=abc"));
    }
}
