//! Printing findings: one line each, a summary line, or JSON.
use crate::finding::{Finding, Severity};

/// How many findings of each severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// High.
    pub high: usize,
    /// Medium.
    pub medium: usize,
    /// Low.
    pub low: usize,
    /// Informational.
    pub info: usize,
}

impl Summary {
    /// Counts the findings.
    pub fn of(findings: &[Finding]) -> Summary {
        let mut s = Summary::default();
        for f in findings {
            match f.severity {
                Severity::High => s.high += 1,
                Severity::Medium => s.medium += 1,
                Severity::Low => s.low += 1,
                Severity::Info => s.info += 1,
            }
        }
        s
    }

    /// Findings that are weaknesses (all but informational ones).
    pub fn weaknesses(&self) -> usize {
        self.high + self.medium + self.low
    }

    /// "broker.conf: 3 weaknesses (1 high, 2 medium), 1 informational note" or
    /// "broker.conf: no weaknesses found".
    pub fn line(&self, config: &str) -> String {
        let mut s = match self.weaknesses() {
            0 => format!("{config}: no weaknesses found"),
            n => {
                let parts: Vec<String> = [(self.high, "high"), (self.medium, "medium"), (self.low, "low")]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, what)| format!("{n} {what}"))
                    .collect();
                format!("{config}: {n} weakness{} ({})", if n == 1 { "" } else { "es" }, parts.join(", "))
            }
        };
        match self.info {
            0 => {}
            1 => s.push_str(", 1 informational note"),
            n => s.push_str(&format!(", {n} informational notes")),
        }
        s
    }
}

/// The findings as a JSON array, one object per line:
/// `{"severity":"high","kind":"password-without-tls","file":"broker.conf","line":12,"message":"..."}`.
pub fn json(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "[]\n".to_owned();
    }
    // Written field by field to keep this order (serde_json's maps sort their keys).
    let string = |s: &str| serde_json::Value::from(s).to_string();
    let objects: Vec<String> = findings
        .iter()
        .map(|f| {
            format!(
                r#"{{"severity":{},"kind":{},"file":{},"line":{},"message":{}}}"#,
                string(f.severity.as_str()),
                string(f.kind.as_str()),
                string(&f.at.file),
                f.at.line,
                string(&f.message)
            )
        })
        .collect();
    format!("[\n  {}\n]\n", objects.join(",\n  "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Kind, Location};

    #[test]
    fn summary_lines() {
        let f = |s| Finding::new(s, Kind::NoAcl, Location::new("c", 1), "m");
        assert_eq!(Summary::of(&[]).line("c"), "c: no weaknesses found");
        assert_eq!(
            Summary::of(&[f(Severity::Info)]).line("c"),
            "c: no weaknesses found, 1 informational note"
        );
        let all =
            [f(Severity::High), f(Severity::Low), f(Severity::Low), f(Severity::Info), f(Severity::Info)];
        assert_eq!(Summary::of(&all).line("c"), "c: 3 weaknesses (1 high, 2 low), 2 informational notes");
        assert_eq!(Summary::of(&all[..1]).line("c"), "c: 1 weakness (1 high)");
    }

    #[test]
    fn json_array() {
        assert_eq!(json(&[]), "[]\n");
        let f = Finding::new(Severity::High, Kind::NoAcl, Location::new("b\"c", 3), "x");
        let text = json(&[f.clone(), f]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[1]["file"], "b\"c");
        assert_eq!(v[0]["line"], 3);
        assert_eq!(v[0]["kind"], "no-acl");
        assert_eq!(text.lines().count(), 4);
        assert!(text
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(r#"  {"severity":"high","kind":"no-acl","file":"b\"c","#));
    }
}
